"""The model registry: the paper's convnet presets, ResNet-18, and any user's
linen or NNX Module from `package.module:factory`, by name, as a `net.Net`.

Each model names its ordered transferable groups (`groups`): the presets'
are conv1..fc7; whatever is in no group (the head) is re-initialised in every
transplant.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from tfx_jax.errors import UserError
from tfx_jax.models import convnet, net, norm, resnet
from tfx_jax.models import groups as groups_lib

# name -> (factory(num_classes), ordered transferable groups).
REGISTRY = {
    **{name: (functools.partial(convnet.ConvNet, preset), convnet.LAYERS[:7])
       for name, preset in convnet.PRESETS.items()},
    'resnet18': (functools.partial(resnet.ResNet18, width=64), resnet.GROUPS),
    'resnet18_w16': (functools.partial(resnet.ResNet18, width=16), resnet.GROUPS),
}


AXIS_NAME = 'batch'  # The collective axis a user's module may reduce over (flax's examples').
# The up-front trace's batch and classes: two sizes that a transposed output cannot match.
CHECK_BATCH, CHECK_CLASSES = 2, 3


# Model objects given in this process (tfx_jax.Study's `model=`), by the name
# the config holds: their 'module:qualified_name'.
OBJECTS: dict[str, Callable] = {}


def register(name: str, factory: Callable) -> str:
  """Makes `name` resolve to `factory` in this process, before any import."""
  OBJECTS[name] = factory
  return name


def _factory(name: str) -> Callable:
  """A registry entry's factory, a registered object, or `package.module:factory`
  imported."""
  if name in REGISTRY:
    return REGISTRY[name][0]
  if name in OBJECTS:
    return OBJECTS[name]
  module_name, colon, attr = name.partition(':')
  if not colon or not module_name or not attr:
    raise UserError(f'Unknown model {name!r}; known: {", ".join(sorted(REGISTRY))}, '
                    f'or your own as package.module:factory.')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(f'Cannot import module {module_name!r} of model {name!r} '
                    f'({e}); put it on PYTHONPATH or install its package.') from None
  except Exception as e:  # pylint: disable=broad-except  # The user's module failed on import.
    raise UserError(f'Importing module {module_name!r} of model {name!r} raised '
                    f'{type(e).__name__}: {" ".join(str(e).split())[:300]} '
                    f'(--verbose shows the traceback).') from e
  factory = getattr(module, attr, None)
  if not callable(factory):
    raise UserError(f'Module {module_name!r} has no callable {attr!r} (model '
                    f'{name!r}); the factory is factory(num_classes) -> linen Module, '
                    f'or factory(num_classes, rngs) -> nnx.Module.')
  return factory


def _parameters(factory: Callable) -> Mapping[str, inspect.Parameter]:
  try:
    return inspect.signature(factory).parameters
  except (TypeError, ValueError):  # A builtin or C callable: called positionally.
    return {}


def _is_nnx(factory: Callable) -> bool:
  """An nnx.Module class (or a partial of one), or a factory taking `rngs`."""
  base = factory
  while isinstance(base, functools.partial):
    base = base.func
  if isinstance(base, type):
    return issubclass(base, nnx.Module)
  return 'rngs' in _parameters(factory)


def create(name: str, num_classes: int, axis_name: str = AXIS_NAME,
           frozen_norm: str = norm.DEFAULT) -> net.Net:
  """The model `name` (a REGISTRY entry or package.module:factory) with
  `num_classes` outputs; `frozen_norm`: how its frozen layers' BatchNorm
  normalises in training (models/norm.py).

  A user's factory is called as factory(num_classes) (by keyword when it has
  a `num_classes` parameter, as flax's `partial(ResNet, ...)` does) and
  returns a linen Module; or, when it takes `rngs` (an nnx.Module class, say),
  it is an NNX factory, factory(num_classes, rngs=...). Around a user's module
  the collective axis `axis_name` is bound (`net.Net`)."""
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
  factory = _factory(name)
  if name in REGISTRY:
    return net.Net(factory(num_classes), num_classes, frozen_norm=frozen_norm)
  origin = f'Model {name!r}'
  if _is_nnx(factory):
    return net.Net(net.from_nnx(factory, num_classes, origin), num_classes, axis_name,
                   origin, is_nnx=True, frozen_norm=frozen_norm)
  params = _parameters(factory)
  by_keyword = 'num_classes' in params and params['num_classes'].kind in (
      inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
  try:
    model = factory(num_classes=num_classes) if by_keyword else factory(num_classes)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'{origin}: its factory raised {type(e).__name__}: '
                    f'{" ".join(str(e).split())[:300]} (--verbose shows the traceback).'
                    ) from e
  if not isinstance(model, nn.Module):
    raise UserError(f'Model factory {name!r} returned {type(model).__name__}, not a '
                    f'flax.linen Module (or an nnx.Module: give its factory an `rngs` '
                    f'argument).')
  return net.Net(model, num_classes, axis_name,
                 f'{origin} (flax module {type(model).__name__})', frozen_norm=frozen_norm)


def groups(name: str, params: Mapping, layer_groups: Sequence[str] = ()) -> tuple[str, ...]:
  """The ordered transferable groups of model `name`: `layer_groups` when
  given, else the registry's, else the default groups of its params tree
  (groups.default: a container's blocks, or the top-level layers but the
  head). Each group path must match some leaf, once, and not the head."""
  if layer_groups:
    chosen = tuple(layer_groups)
  elif name in REGISTRY:
    chosen = REGISTRY[name][1]
  else:
    chosen = groups_lib.default(params)
  groups_lib.check(name, params, chosen)
  if not chosen:
    raise UserError(f'Model {name!r} has no transferable layer groups; set '
                    f'config.layer_groups.')
  return chosen


def transferable_groups(name: str, image_shape, layer_groups: Sequence[str] = (),
                        axis_name: str = AXIS_NAME) -> tuple[str, ...]:
  """`groups` of model `name` for inputs of `image_shape`, found from the
  shapes of its parameters (nothing is initialised, nothing computed).

  A user's module is also traced once in training and in evaluation mode, so
  that a module that fails there, or returns no logits of shape [batch,
  classes] (net.logits_of), does so now, as one clear error, before anything
  is written."""
  model = create(name, CHECK_CLASSES, axis_name)
  shapes = variable_shapes(model, image_shape)
  if name not in REGISTRY:
    images = jnp.zeros((CHECK_BATCH, *image_shape))
    for train in (True, False):
      who = f'{model.origin}, in {"training" if train else "evaluation"} mode,'
      mutable = [k for k in shapes if k != 'params'] if train else []

      def logits(v, train=train, who=who, mutable=mutable):
        out = model.apply(v, images, train=train, rngs={'dropout': jax.random.PRNGKey(0)},
                          mutable=mutable or False)
        return net.logits_of(out[0] if mutable else out, who)

      _check_shape(jax.eval_shape(logits, shapes), model, who)
  return groups(name, shapes['params'], layer_groups)


def _check_shape(logits, model: net.Net, who: str) -> None:
  if tuple(logits.shape) != (CHECK_BATCH, model.num_classes):
    raise UserError(f'{who} returned logits {net.describe(logits)} for {CHECK_BATCH} '
                    f'images and {model.num_classes} classes; they must be [batch, classes] '
                    f'= [{CHECK_BATCH}, {model.num_classes}]: give the head num_classes '
                    f'outputs.')


def variable_shapes(model: net.Net | nn.Module, image_shape) -> dict:
  """The shapes of `init_variables`, every level's keys in the order the
  model created them (what the default groups and the head are read from):
  jit and eval_shape sort dict keys."""
  order = {}

  def init():
    variables = init_variables(model, jax.random.PRNGKey(0), image_shape)
    order.update(_key_order(variables))
    return variables

  return _ordered(jax.eval_shape(init), order)


def _key_order(tree: Mapping) -> dict:
  return {k: _key_order(v) if isinstance(v, Mapping) else {} for k, v in tree.items()}


def _ordered(tree: Mapping, order: Mapping) -> dict:
  """`tree` (eval_shape's, keys sorted) with each level's keys in `order`'s."""
  if not isinstance(tree, Mapping):
    return tree
  return {k: _ordered(tree[k], order[k]) for k in order}


def init_variables(model: net.Net | nn.Module, rng: jax.Array, image_shape) -> dict:
  """Fresh variables (params and any other collection, e.g. batch_stats) of a
  `create`d model, or of any linen Module."""
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  if isinstance(model, nn.Module):
    return dict(model.init({'params': rng}, dummy, train=False))
  return model.init(rng, dummy)


def init_params(model: net.Net | nn.Module, rng: jax.Array, image_shape) -> dict:
  """Fresh parameters for images of shape (H, W, C)."""
  return init_variables(model, rng, image_shape)['params']
