"""Each transferable group's features for a batch of images: what the layers
above it receive, in evaluation mode, for any linen model.

Group n's features are the input of the module that follows it: the first
path of group n+1, or for the last group the head (the model's last top-level
module outside every group). For CaffeNet, conv1's features are what conv2
reads (after conv1's ReLU, pool and LRN), fc7's what fc8 reads. They are taken
by intercepting those modules' calls (flax.linen.intercept_methods), so a
residual block's features include its skip path, and nothing of the model
needs changing.

Spatial maps [n, h, w, c] are average-pooled to a grid of at most 4 x 4
(rows and columns past the last whole cell dropped) and flattened: 16c
features, which keep where in the image a unit fires; dense outputs [n, d]
are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tfx_jax.models import net as net_lib

GRID = 4  # Spatial maps are pooled to at most GRID x GRID cells.


def head_of(params: Mapping, groups: Sequence[str]) -> str:
  """The model's head: its last top-level module that no group holds a path of."""
  tops = {path.split('/')[0] for group in groups for path in group.split('+')}
  outside = [name for name in params if name not in tops]
  if not outside:
    raise ValueError(f'Every top-level module ({", ".join(params)}) is in a group: '
                     'the model has no head to read the last group\'s features from.')
  return outside[-1]


def pooled(x: jax.Array) -> jax.Array:
  """[n, h, w, c] -> [n, s*s*c] by average pooling to s x s cells (s = min(GRID,
  h, w)); [n, d] as it is; other shapes flattened."""
  if x.ndim != 4:
    return x.reshape(x.shape[0], -1)
  n, h, w, c = x.shape
  s = min(GRID, h, w)
  x = x[:, :h // s * s, :w // s * s]
  return x.reshape(n, s, h // s, s, w // s, c).mean(axis=(2, 4)).reshape(n, -1)


def features(model, variables: Mapping, images: jax.Array,
             groups: Sequence[str]) -> dict[str, jax.Array]:
  """{group: its features [n, d] (float32)} for `images` (the model's input,
  already normalised) under `variables`, in evaluation mode. `model` is a
  registry-created Net or a linen Module."""
  module = model
  if isinstance(model, net_lib.Net):
    if model.is_nnx:
      raise ValueError('Layer features of an NNX module (through the linen bridge) '
                       'are not supported yet; write the model in flax.linen.')
    # Evaluation mode reduces over no axis (BatchNorm uses its averages), so the
    # module runs unbound: no vmap for its features to escape from.
    module = model.module
  following = [group.split('+')[0] for group in groups[1:]]
  following.append(head_of(variables['params'], groups))
  wanted = dict(zip(following, groups))
  found = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__':
      group = wanted.get('/'.join(context.module.path))
      if group is not None and group not in found:
        found[group] = pooled(jnp.asarray(args[0], jnp.float32))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    module.apply(variables, images, train=False)
  missing = [g for g in groups if g not in found]
  if missing:
    raise ValueError(f'No module at {", ".join(following[groups.index(g)] for g in missing)} '
                     f'was called, so the features of group(s) {", ".join(missing)} are '
                     'unknown.')
  return {group: found[group] for group in groups}
