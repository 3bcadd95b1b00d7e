"""The arithmetic of the train and eval steps, pinned by `config.precision`.

- 'float32' (the default): float32 everywhere, matmuls and convolutions at
  precision 'highest'. Faithful: the paper's Caffe computed in float32, and a
  GPU or TPU computes what the CPU does (up to the order of sums).
- 'tf32': float32 storage, matmuls and convolutions at precision 'high'
  (TensorFloat-32 on Ampere and later GPUs, 3-pass bfloat16 on TPU; CPUs
  compute float32).
- 'bfloat16': the forward and backward passes in bfloat16 (parameters and
  images cast on the way in, logits back to float32 for the loss); the
  parameters, their gradients, the optimizer state and BatchNorm's statistics
  stay float32.

Unpinned, JAX's default would run float32 convolutions as TF32 on GPUs and as
one bfloat16 pass on TPUs, while CPUs compute float32: the same config would
compute different things on different hardware.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

NAMES = ('float32', 'tf32', 'bfloat16')
DEFAULT = 'float32'
_MATMUL = {'float32': 'highest', 'tf32': 'high', 'bfloat16': 'default'}


def check(name: str) -> str:
  if name not in NAMES:
    raise ValueError(f'precision must be one of {", ".join(NAMES)}, got {name!r}.')
  return name


@contextlib.contextmanager
def matmuls(name: str) -> Iterator[None]:
  """Traces the matmuls and convolutions inside at `name`'s precision (jitted
  functions read it when they trace, so enter it inside the traced function)."""
  with jax.default_matmul_precision(_MATMUL[check(name)]):
    yield


def compute_dtype(name: str):
  return jnp.bfloat16 if check(name) == 'bfloat16' else jnp.float32


def cast(tree: Any, name: str) -> Any:
  """`tree`'s floating-point leaves in the compute dtype of `name` (no-op for
  float32 and tf32). Differentiable: gradients come back in the leaves' dtype."""
  dtype = compute_dtype(name)
  if dtype == jnp.float32:
    return tree
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def like(tree: Any, reference: Any) -> Any:
  """`tree`'s leaves in the dtypes of `reference`'s (the model's updated
  collections back to float32 after a bfloat16 pass)."""
  return jax.tree.map(lambda x, r: x.astype(r.dtype), tree, reference)
