"""How a frozen group's BatchNorm normalises in training (config.frozen_norm).

'batch': as the module is written, in training mode: the batch's own mean
  and variance (PyTorch's train(), and flax's `use_running_average=not
  train`); its running averages stay frozen, and evaluation uses them.
'running': Keras' inference mode for frozen layers (TF 2.0 and later): every
  BatchNorm inside a frozen group uses its running averages in training too,
  so a frozen group computes in training what it computes in evaluation.

Linen modules get it through `flax.linen.intercept_methods` on their
`nn.BatchNorm` calls; NNX modules by setting each `nnx.BatchNorm`'s
`use_running_average` after `train()`. A BatchNorm outside the frozen groups,
and every other layer, is left as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import flax.linen as nn
from flax import nnx

MODES = ('batch', 'running')
DEFAULT = 'batch'


def _under(path: Sequence, layers: tuple[tuple[str, ...], ...]) -> bool:
  names = tuple(str(p) for p in path)
  return any(names[:len(layer)] == layer for layer in layers)


def _split(layers: Iterable[str]) -> tuple[tuple[str, ...], ...]:
  return tuple(tuple(layer.split('/')) for layer in layers)


@contextlib.contextmanager
def running_averages(layers: Iterable[str]) -> Iterator[None]:
  """Within it, every linen nn.BatchNorm under one of `layers` (module paths,
  'a/b') normalises with its running averages, whatever its module asks."""
  layers = _split(layers)

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != '__call__' or not isinstance(module, nn.BatchNorm)
        or not _under(module.path, layers)):
      return next_fun(*args, **kwargs)
    if len(args) > 1 or kwargs.get('use_running_average') is not None:
      args, kwargs = args[:1], {**kwargs, 'use_running_average': True}
      return next_fun(*args, **kwargs)
    # Given to the constructor (flax's examples: use_running_average=not train),
    # where a call-time value would clash: this call's module, this call only.
    was = module.use_running_average
    object.__setattr__(module, 'use_running_average', True)
    try:
      return next_fun(*args, **kwargs)
    finally:
      object.__setattr__(module, 'use_running_average', was)

  if not layers:
    yield
    return
  with nn.intercept_methods(interceptor):
    yield


def nnx_running_averages(module: nnx.Module, layers: Iterable[str]) -> None:
  """`running_averages` for an NNX module in train() mode: each nnx.BatchNorm
  under `layers` (its list indices as names) uses its running averages."""
  layers = _split(layers)
  for path, sub in nnx.iter_modules(module):
    if isinstance(sub, nnx.BatchNorm) and _under(path, layers):
      sub.use_running_average = True
