"""Pure operations on parameter trees whose top-level keys are layer names.

Every function returns a new tree and never mutates its inputs; leaves are
shared, not copied (JAX arrays are immutable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from tfx_jax.models import LAYERS

FROZEN, WEIGHTS, BIASES = 'frozen', 'weights', 'biases'


def first_layers(n: int) -> tuple[str, ...]:
  """The first n transferable layers (conv1..fc7), n in 0..7."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= 7:
    raise ValueError(f'n must be an integer in 0..7 (layers conv1..fc7; fc8 is '
                     f'never transferred), got {n!r}.')
  return LAYERS[:int(n)]


def _check_layers(tree: Mapping, layers: Iterable[str], what: str) -> None:
  unknown = [name for name in layers if name not in tree]
  if unknown:
    raise ValueError(f'Unknown layer(s) {unknown} in the {what} tree; its '
                     f'layers are {list(tree)}.')


def _flat(tree: Mapping) -> dict[str, Any]:
  return traverse_util.flatten_dict(_as_dict(tree), sep='/')


def _as_dict(tree: Any) -> Any:
  """A plain nested dict (Flax FrozenDicts and other mappings included)."""
  if isinstance(tree, Mapping):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


def transplant(target: Mapping, source: Mapping, layers: Iterable[str]) -> dict:
  """`target` with the subtrees of `layers` taken from `source`.

  Raises ValueError naming every path whose presence, shape or dtype differs
  between source and target in the named layers, or any unknown layer.
  """
  layers = tuple(layers)
  _check_layers(target, layers, 'target')
  _check_layers(source, layers, 'source')
  problems = []
  for layer in layers:
    src, dst = _flat({layer: source[layer]}), _flat({layer: target[layer]})
    for path in sorted(set(src) | set(dst)):
      if path not in src:
        problems.append(f'{path}: missing in source (target {np.shape(dst[path])})')
      elif path not in dst:
        problems.append(f'{path}: missing in target (source {np.shape(src[path])})')
      elif (np.shape(src[path]) != np.shape(dst[path])
            or jax.numpy.result_type(src[path]) != jax.numpy.result_type(dst[path])):
        problems.append(
            f'{path}: source {np.shape(src[path])} {jax.numpy.result_type(src[path])}'
            f' vs target {np.shape(dst[path])} {jax.numpy.result_type(dst[path])}')
  if problems:
    raise ValueError('Cannot transplant: source and target differ at\n  '
                     + '\n  '.join(problems))
  out = _as_dict(target)
  for layer in layers:
    out[layer] = _as_dict(source[layer])
  return out


def freeze_labels(params: Mapping, frozen_layers: Iterable[str]) -> dict:
  """Optax partition labels: 'frozen', 'biases' (leaves named bias), 'weights'."""
  frozen_layers = tuple(frozen_layers)
  _check_layers(params, frozen_layers, 'params')
  flat = _flat(params)
  labels = {}
  for path in flat:
    layer, *_, leaf = path.split('/')
    if layer in frozen_layers:
      labels[path] = FROZEN
    else:
      labels[path] = BIASES if leaf == 'bias' else WEIGHTS
  return traverse_util.unflatten_dict(labels, sep='/')


def split_trainable(params: Mapping, frozen_layers: Iterable[str]) -> tuple[dict, dict]:
  """(trainable, frozen) top-level partitions of params; `merge` inverts it."""
  frozen_layers = set(frozen_layers)
  _check_layers(params, frozen_layers, 'params')
  trainable = {k: v for k, v in params.items() if k not in frozen_layers}
  frozen = {k: v for k, v in params.items() if k in frozen_layers}
  return trainable, frozen


def merge(*trees: Mapping) -> dict:
  """Union of trees with disjoint top-level keys."""
  out = {}
  for tree in trees:
    overlap = set(out) & set(tree)
    if overlap:
      raise ValueError(f'Cannot merge trees sharing layers {sorted(overlap)}.')
    out.update(tree)
  return out
