"""Pure operations on parameter trees (and Flax variables) by layer path.

A layer is a path in the tree: a top-level name ('conv1', 'ResNetBlock_0') or
a nested one ('encoder/block_3', 'ResNetBlock_0/Conv_0'); it names the whole
subtree under it. A layer group joins several paths with '+'
('conv_init+bn_init'), and the first n groups are what a transplant copies or
freezes. Every function returns a new tree and never mutates its inputs;
leaves are shared, not copied (JAX arrays are immutable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from tfx_jax.models.convnet import LAYERS

FROZEN, WEIGHTS, BIASES, NO_DECAY = 'frozen', 'weights', 'biases', 'no_decay'
TRANSFERABLE = LAYERS[:7]  # The presets' groups: conv1..fc7; fc8 is the head.


def first_layers(n: int, layers: Sequence[str] = TRANSFERABLE) -> tuple[str, ...]:
  """The paths of the first n of the ordered transferable groups `layers`,
  n in 0..len(layers); a group 'a+b' gives both paths."""
  if (isinstance(n, bool) or not isinstance(n, (int, np.integer))
      or not 0 <= n <= len(layers)):
    names = (f'layers {layers[0]}..{layers[-1]}; the head is never transferred'
             if layers else 'no transferable layers')
    raise ValueError(f'n must be an integer in 0..{len(layers)} ({names}), got {n!r}.')
  return tuple(path for group in layers[:int(n)] for path in group.split('+'))


def _flat(tree: Mapping) -> dict[str, Any]:
  return traverse_util.flatten_dict(_as_dict(tree), sep='/')


def _as_dict(tree: Any) -> Any:
  """A plain nested dict (Flax FrozenDicts and other mappings included)."""
  if isinstance(tree, Mapping):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


def under(path: str, layer: str) -> bool:
  """Whether the leaf or layer `path` is `layer` or inside it ('a/b' under 'a')."""
  return path == layer or path.startswith(layer + '/')


def _check_layers(flat: Mapping[str, Any], layers: Iterable[str], what: str,
                  tree: Mapping) -> None:
  unknown = [layer for layer in layers if not any(under(p, layer) for p in flat)]
  if unknown:
    raise ValueError(f'Unknown layer(s) {unknown} in the {what} tree; its '
                     f'layers are {list(tree)} (nested paths as \'a/b\').')


def _mismatches(target: dict, source: dict, layers: Sequence[str],
                prefix: str = '') -> list[str]:
  problems = []
  for path in sorted(set(source) | set(target)):
    if not any(under(path, layer) for layer in layers):
      continue
    src, dst = source.get(path), target.get(path)
    if path not in source:
      problems.append(f'{prefix}{path}: missing in source (target {np.shape(dst)})')
    elif path not in target:
      problems.append(f'{prefix}{path}: missing in target (source {np.shape(src)})')
    elif (np.shape(src) != np.shape(dst)
          or jax.numpy.result_type(src) != jax.numpy.result_type(dst)):
      problems.append(
          f'{prefix}{path}: source {np.shape(src)} {jax.numpy.result_type(src)}'
          f' vs target {np.shape(dst)} {jax.numpy.result_type(dst)}')
  return problems


def _raise(problems: list[str]) -> None:
  if problems:
    raise ValueError('Cannot transplant: source and target differ at\n  '
                     + '\n  '.join(problems))


def _copy_under(target: dict, source: dict, layers: Sequence[str]) -> dict:
  """Flat `target` with every leaf under `layers` taken from flat `source`."""
  out = {p: v for p, v in target.items() if not any(under(p, l) for l in layers)}
  out.update({p: v for p, v in source.items() if any(under(p, l) for l in layers)})
  return out


def transplant(target: Mapping, source: Mapping, layers: Iterable[str]) -> dict:
  """`target` with the subtrees at the paths `layers` taken from `source`.

  Raises ValueError naming every path whose presence, shape or dtype differs
  between source and target under the named layers, or any unknown layer.
  """
  layers = tuple(layers)
  flat_target, flat_source = _flat(target), _flat(source)
  _check_layers(flat_target, layers, 'target', target)
  _check_layers(flat_source, layers, 'source', source)
  _raise(_mismatches(flat_target, flat_source, layers))
  return traverse_util.unflatten_dict(_copy_under(flat_target, flat_source, layers),
                                      sep='/')


def transplant_variables(target: Mapping, source: Mapping, layers: Iterable[str]) -> dict:
  """Flax variables (`{'params': ..., 'batch_stats': ...}`) `target` with every
  collection's leaves under the paths `layers` taken from `source`.

  Each layer must exist in some collection of both; a collection that holds
  nothing under a layer (a conv's batch_stats) is left as it is. Raises
  ValueError naming every mismatched path, prefixed by its collection.
  """
  layers = tuple(layers)
  if set(target) != set(source):
    raise ValueError(f'Cannot transplant: source collections {sorted(source)} vs '
                     f'target {sorted(target)}.')
  flat = {name: (_flat(target[name]), _flat(source[name])) for name in target}
  for what, i, tree in (('target', 0, target), ('source', 1, source)):
    missing = [layer for layer in layers if not any(
        under(p, layer) for pair in flat.values() for p in pair[i])]
    if missing:
      known = sorted({k for collection in tree.values() for k in collection})
      raise ValueError(f'Unknown layer(s) {missing} in the {what} variables; its '
                       f'layers are {known} (nested paths as \'a/b\').')
  problems = [p for name, (dst, src) in flat.items()
              for p in _mismatches(dst, src, layers, prefix=f'{name}: ')]
  _raise(problems)
  return {name: traverse_util.unflatten_dict(_copy_under(dst, src, layers), sep='/')
          for name, (dst, src) in flat.items()}


def keep_under(new: Mapping, old: Mapping, layers: Iterable[str]) -> dict:
  """`new` with its leaves under the paths `layers` taken back from `old`: a
  frozen layer's collections (BatchNorm statistics) stay as they were. Layers
  that hold no leaf in these trees are ignored."""
  layers = tuple(layers)
  if not layers:
    return _as_dict(new)
  return traverse_util.unflatten_dict(_copy_under(_flat(new), _flat(old), layers),
                                      sep='/')


def no_weight_decay(path: str) -> bool:
  """The default rule: biases and normalisation scales get no weight decay."""
  return path.rsplit('/', 1)[-1] in ('bias', 'scale')


def freeze_labels(params: Mapping, frozen_layers: Iterable[str],
                  no_decay: Callable[[str], bool] = no_weight_decay) -> dict:
  """Optax partition labels for every leaf of `params`, by its path:

  'frozen' under the paths `frozen_layers`; else 'biases' for leaves named
  bias (the paper's 2x learning rate, no weight decay); 'no_decay' for the
  other leaves where `no_decay(path)` holds (by default normalisation scales:
  1x learning rate, no weight decay); 'weights' for the rest.
  """
  frozen_layers = tuple(frozen_layers)
  flat = _flat(params)
  _check_layers(flat, frozen_layers, 'params', params)
  labels = {}
  for path in flat:
    if any(under(path, layer) for layer in frozen_layers):
      labels[path] = FROZEN
    elif path.rsplit('/', 1)[-1] == 'bias':
      labels[path] = BIASES
    else:
      labels[path] = NO_DECAY if no_decay(path) else WEIGHTS
  return traverse_util.unflatten_dict(labels, sep='/')


def split_trainable(params: Mapping, frozen_layers: Iterable[str]) -> tuple[dict, dict]:
  """(trainable, frozen) partitions of params by path; `merge` inverts it."""
  frozen_layers = tuple(frozen_layers)
  flat = _flat(params)
  _check_layers(flat, frozen_layers, 'params', params)
  is_frozen = {p: any(under(p, layer) for layer in frozen_layers) for p in flat}
  trainable = {p: v for p, v in flat.items() if not is_frozen[p]}
  frozen = {p: v for p, v in flat.items() if is_frozen[p]}
  return (traverse_util.unflatten_dict(trainable, sep='/'),
          traverse_util.unflatten_dict(frozen, sep='/'))


def merge(*trees: Mapping) -> dict:
  """Union of trees that share no leaf path."""
  out = {}
  for tree in trees:
    flat = _flat(tree)
    overlap = set(out) & set(flat)
    if overlap:
      raise ValueError(f'Cannot merge trees sharing layers {sorted(overlap)}.')
    out.update(flat)
  return traverse_util.unflatten_dict(out, sep='/')
