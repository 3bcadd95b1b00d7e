"""The model registry: the paper's convnet presets, ResNet-18, and any user's
linen Module from `package.module:factory`, by name.

Each model names its ordered transferable groups (`groups`): the presets'
are conv1..fc7; whatever is in no group (the head) is re-initialised in every
transplant.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tfx_jax.errors import UserError
from tfx_jax.models import convnet, resnet

# name -> (factory(num_classes), ordered transferable groups).
REGISTRY = {
    **{name: (functools.partial(convnet.ConvNet, preset), convnet.LAYERS[:7])
       for name, preset in convnet.PRESETS.items()},
    'resnet18': (functools.partial(resnet.ResNet18, width=64), resnet.GROUPS),
    'resnet18_w16': (functools.partial(resnet.ResNet18, width=16), resnet.GROUPS),
}


def _factory(name: str) -> Callable[[int], nn.Module]:
  """A registry entry's factory, or `package.module:factory` imported."""
  if name in REGISTRY:
    return REGISTRY[name][0]
  module_name, colon, attr = name.partition(':')
  if not colon or not module_name or not attr:
    raise UserError(f'Unknown model {name!r}; known: {", ".join(sorted(REGISTRY))}, '
                    f'or your own as package.module:factory.')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(f'Cannot import module {module_name!r} of model {name!r} '
                    f'({e}); put it on PYTHONPATH or install its package.') from None
  factory = getattr(module, attr, None)
  if not callable(factory):
    raise UserError(f'Module {module_name!r} has no callable {attr!r} (model '
                    f'{name!r}); the factory is factory(num_classes) -> linen Module.')
  return factory


def create(name: str, num_classes: int) -> nn.Module:
  """The model `name` (a REGISTRY entry or package.module:factory) with
  `num_classes` outputs."""
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
  model = _factory(name)(num_classes)
  if not isinstance(model, nn.Module):
    raise UserError(f'Model factory {name!r} returned {type(model).__name__}, not a '
                    f'flax.linen Module.')
  return model


def groups(name: str, params: Mapping, layer_groups: Sequence[str] = ()) -> tuple[str, ...]:
  """The ordered transferable groups of model `name`: `layer_groups` when
  given, else the registry's, else the params tree's top-level keys in order,
  all but the last (the head). Each group path must match some leaf."""
  if layer_groups:
    chosen = tuple(layer_groups)
  elif name in REGISTRY:
    chosen = REGISTRY[name][1]
  else:
    chosen = tuple(params)[:-1]
  flat = ['/'.join(path) for path in _paths(params)]
  for group in chosen:
    for path in group.split('+'):
      if not any(p == path or p.startswith(path + '/') for p in flat):
        raise UserError(f'Layer group {group!r} of model {name!r}: {path!r} matches '
                        f'no parameter; its top-level layers are {list(params)} '
                        f'(nested paths as a/b, groups joined by +).')
  if not chosen:
    raise UserError(f'Model {name!r} has no transferable layer groups; set '
                    f'config.layer_groups.')
  return chosen


def transferable_groups(name: str, image_shape, layer_groups: Sequence[str] = ()
                        ) -> tuple[str, ...]:
  """`groups` of model `name` for inputs of `image_shape`, found from the
  shapes of its parameters (nothing is initialised)."""
  model, order = create(name, 2), []

  def init():
    variables = init_variables(model, jax.random.PRNGKey(0), image_shape)
    order.extend(variables['params'])  # eval_shape's output sorts dict keys.
    return variables

  shapes = jax.eval_shape(init)['params']
  return groups(name, {k: shapes[k] for k in order}, layer_groups)


def _paths(tree: Mapping, prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _paths(value, (*prefix, str(key)))
    else:
      yield (*prefix, str(key))


def init_variables(model: nn.Module, rng: jax.Array, image_shape) -> dict:
  """Fresh variables (params and any other collection, e.g. batch_stats)."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  return dict(model.init({'params': rng}, dummy, train=False))


def init_params(model: nn.Module, rng: jax.Array, image_shape) -> dict:
  """Fresh parameters for images of shape (H, W, C)."""
  return init_variables(model, rng, image_shape)['params']
