"""Each transferable group's features for a batch of images: what the layers
above it receive, in evaluation mode, for any linen or NNX model.

Group n's features are the input of the module that follows it: the first
path of the groups after it that names a module (bare parameters, a ViT's
`pos_embedding`, are not called), or for the last group the head. For
CaffeNet, conv1's features are what conv2 reads (after conv1's ReLU, pool and
LRN), fc7's what fc8 reads. They are taken by intercepting the first call of
a module at or under that path (flax.linen.intercept_methods; for an NNX
module, its classes' __call__ while the analysis traces it), so a residual
block's features include its skip path, a container's (an nnx.List) are its
first block's input, and nothing of the model needs changing.

Spatial maps [n, h, w, c] are average-pooled to a grid of at most 4 x 4
(rows and columns past the last whole cell dropped) and flattened: 16c
features, which keep where in the image a unit fires; token sequences [n, t,
d] (a Transformer's) are averaged over the tokens, the class token included:
d features; dense outputs [n, d] are kept as they are. A group wider than
`max_features` (the flattened input of a first dense layer: 65,536 units for
`small` at 256 px) is count-sketched to that width (`sketched`), so the
analysis's memory is bounded by its config, not by the image size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tfx_jax.models import groups as groups_lib
from tfx_jax.models import net as net_lib
from tfx_jax.models import registry

GRID = 4  # Spatial maps are pooled to at most GRID x GRID cells.


def head_of(params: Mapping, groups: Sequence[str]) -> str:
  """The model's head (models/groups.head), which no group may hold."""
  head = groups_lib.head(params)
  if any(head == p or head.startswith(p + '/') for g in groups for p in g.split('+')):
    raise ValueError(f'The head {head!r} is in a group: the model has no head to read '
                     'the last group\'s features from.')
  return head


def _is_module(params: Mapping, path: str) -> bool:
  node = params
  for key in path.split('/'):
    if not isinstance(node, Mapping) or key not in node:
      return False
    node = node[key]
  return isinstance(node, Mapping)


def following(params: Mapping, groups: Sequence[str]) -> list[str]:
  """For each group, the path whose input is its features (see the module's doc)."""
  head, out = head_of(params, groups), []
  for i in range(len(groups)):
    later = [p for g in groups[i + 1:] for p in g.split('+') if _is_module(params, p)]
    out.append(later[0] if later else head)
  return out


def pooled(x: jax.Array) -> jax.Array:
  """[n, h, w, c] -> [n, s*s*c] by average pooling to s x s cells (s = min(GRID,
  h, w)); [n, t, d] -> [n, d], the mean over tokens; [n, d] as it is; other
  shapes flattened."""
  if x.ndim == 3:
    return x.mean(axis=1)
  if x.ndim != 4:
    return x.reshape(x.shape[0], -1)
  n, h, w, c = x.shape
  s = min(GRID, h, w)
  x = x[:, :h // s * s, :w // s * s]
  return x.reshape(n, s, h // s, s, w // s, c).mean(axis=(2, 4)).reshape(n, -1)


def sketched(x: jax.Array, width: int) -> jax.Array:
  """[n, d] -> [n, width] for d > width: a count sketch (Charikar, Chen and
  Farach-Colton 2002; feature hashing) with balanced bins: each unit, times a
  random sign, is added into one of `width` bins, ceil(d / width) units a bin,
  by a permutation fixed by (d, width) alone, so every network's features of a
  group share it. Inner products, so linear CKA, are kept in expectation;
  [n, d] as it is for d <= width."""
  n, d = x.shape
  if d <= width:
    return x
  per = -(-d // width)
  rng = np.random.default_rng([d, width])
  order, signs = rng.permutation(per * width), rng.choice(np.float32([-1, 1]), per * width)
  x = jnp.pad(x, ((0, 0), (0, per * width - d)))  # Zero units: in no inner product.
  return (x[:, order] * signs).reshape(n, width, per).sum(axis=-1)


def _first_array(args, kwargs):
  return next((a for a in (*args, *kwargs.values()) if hasattr(a, 'ndim')), None)


def features(model, variables: Mapping, images: jax.Array, groups: Sequence[str],
             max_features: int | None = None) -> dict[str, jax.Array]:
  """{group: its features [n, d] (float32)} for `images` (the model's input,
  already normalised) under `variables`, in evaluation mode, d at most
  max_features (None: no bound). `model` is a registry-created Net or a linen
  Module."""
  # In creation order (under jit, `variables` has its keys sorted).
  params = registry.variable_shapes(model, images.shape[1:])['params']
  wanted = following(params, groups)
  found = {}

  def record(path: str, args, kwargs) -> None:
    for group, target in zip(groups, wanted):
      if group not in found and (path == target or path.startswith(target + '/')):
        x = _first_array(args, kwargs)
        if x is not None:
          found[group] = pooled(jnp.asarray(x, jnp.float32))
          if max_features:
            found[group] = sketched(found[group], max_features)

  if isinstance(model, net_lib.Net) and model.is_nnx:
    model.apply_nnx(variables, images, lambda module, x: _calls_recorded(
        module, record, lambda: module(x)))
  else:
    # Evaluation mode reduces over no axis (BatchNorm uses its averages), so the
    # module runs unbound: no vmap for its features to escape from.
    module = model.module if isinstance(model, net_lib.Net) else model

    def intercept(next_fun, args, kwargs, context):
      if context.method_name == '__call__':
        record('/'.join(context.module.path), args, kwargs)
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
      module.apply(variables, images, train=False)
  missing = [g for g in groups if g not in found]
  if missing:
    raise ValueError(f'No module at or under {", ".join(wanted[groups.index(g)] for g in missing)} '
                     f'was called with an array, so the features of group(s) '
                     f'{", ".join(missing)} are unknown; choose groups whose next module runs in '
                     'evaluation mode (--config.layer_groups).')
  return {group: found[group] for group in groups}


def _calls_recorded(module: nnx.Module, record: Callable, call: Callable):
  """`call()` with every call of `module`'s submodules given to `record(path,
  args, kwargs)` first: their classes' __call__ wrapped meanwhile, by instance."""
  paths = {id(node): '/'.join(map(str, path)) for path, node in nnx.iter_graph(module)
           if isinstance(node, nnx.Module)}
  classes = {type(node) for _, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)
             and any('__call__' in c.__dict__ for c in type(node).__mro__)}
  resolved = {cls: cls.__call__ for cls in classes}  # Before any is wrapped.

  def wrapped(original):
    def __call__(self, *args, **kwargs):
      if id(self) in paths:
        record(paths[id(self)], args, kwargs)
      return original(self, *args, **kwargs)
    return __call__

  with contextlib.ExitStack() as restore:
    for cls in classes:
      own = cls.__dict__.get('__call__')
      restore.callback(lambda cls=cls, own=own: setattr(cls, '__call__', own) if own
                       else delattr(cls, '__call__'))
      cls.__call__ = wrapped(resolved[cls])
    return call()
