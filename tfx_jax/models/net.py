"""A model as the grid applies it (`Net`): a linen Module, or an NNX one through
flax's own bridge (`nnx.bridge.ToLinen`), with the collective axis its
BatchNorm reduces over bound, and a user's module's failures as one clear line.
What a module may return, and where its logits are in it: `logits_of`.

The steps and the registry call `Net.init` and `Net.apply`, as they would call
a linen Module's. The variables are plain nested dicts of arrays, for either
API, so surgery, freezing, checkpoints and transplants work on them by path.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from tfx_jax.errors import UserError
from tfx_jax.models import norm

_UNBOUND = re.compile(r'unbound axis name: (\S+)')


@dataclasses.dataclass(frozen=True, eq=False)
class Net:
  """`module` with `num_classes` outputs.

  axis_name: a collective axis name the module may reduce over (BatchNorm's
    `axis_name`, `lax.pmean`), bound around every call by a `jax.vmap` of
    size 1. Under the grid's jit the batch is already the global batch, over
    every device, so a reduction over it means what the module asks for, and
    the collective itself is the identity. None: nothing is bound (the presets).
  origin: what to name in a user's module's errors ("model 'pkg.mod:make'");
    '' for the presets, whose errors are bugs of ours and keep their traceback.
  is_nnx: `module` is an NNX Module bridged to linen (`from_nnx`).
  frozen_norm: how a frozen layer's BatchNorm normalises in training
    (models/norm.py): 'batch' or 'running'.
  """
  module: nn.Module
  num_classes: int
  axis_name: str | None = None
  origin: str = ''
  is_nnx: bool = False
  frozen_norm: str = norm.DEFAULT

  def init(self, rng: jax.Array, images: jax.Array) -> dict:
    """Fresh variables (params and any other collection), in evaluation mode."""
    # An NNX factory gets one stream that every other one falls back to, as
    # with nnx.Rngs(seed): Dropout's stream, say, exists when it is built.
    rngs = {'params': rng, 'default': rng} if self.is_nnx else {'params': rng}
    # Unbound when it can be: vmap's output sorts dict keys, and the params'
    # order is the default order of the groups.
    variables = self._call('initialised', lambda x: self.module.init(
        rngs, x, **self._mode(False)), images, bind=False)
    if not self.is_nnx:
      return dict(variables)
    # NNX's state comes sorted by name; the default groups follow the order in
    # which each module's __init__ set its attributes (built abstractly here).
    order = {}

    def build():
      order.update(_attribute_order(self.module.nnx_class(*self.module.args,
                                                          rngs=nnx.Rngs(0))))
      return jnp.zeros(())

    jax.eval_shape(build)
    return {collection: _ordered(_string_keys(tree), order)
            for collection, tree in variables.items()}

  def apply(self, variables: Mapping, images: jax.Array, *, train: bool,
            rngs: Mapping | None = None, mutable: Any = False,
            frozen: tuple[str, ...] = ()) -> Any:
    """Logits, and with `mutable` (a list of collections) the updated ones.
    `frozen`: the layers (paths) frozen in this training step."""
    running = self.running_layers(frozen) if train else ()
    if self.is_nnx:
      variables = _int_keys(variables)
    with norm.running_averages(() if self.is_nnx else running):
      out = self._call('traced', lambda x: self.module.apply(
          variables, x, rngs=rngs, mutable=mutable, **self._mode(train, running)), images)
    if self.is_nnx and mutable:
      return out[0], _string_keys(out[1])
    return out

  def apply_nnx(self, variables: Mapping, images: jax.Array,
                method: Callable[[nnx.Module, jax.Array], Any]) -> Any:
    """`method(module, images)` on the NNX module itself, in evaluation mode
    and unbound, under `variables` (what the analysis reads its layers from)."""
    def call(module, x, *, train):
      del train
      module.eval()
      return method(module, x)

    return self._call('traced', lambda x: self.module.apply(
        _int_keys(variables), x, train=False, nnx_method=call), images, bind=False)

  def running_layers(self, frozen: tuple[str, ...]) -> tuple[str, ...]:
    """The layers whose BatchNorm uses its running averages in training: the
    frozen ones under frozen_norm 'running', else none."""
    return tuple(frozen) if self.frozen_norm == 'running' else ()

  def _mode(self, train: bool, running: tuple[str, ...] = ()) -> dict:
    if not self.is_nnx:
      return {'train': train}
    return {'train': train, 'nnx_method': functools.partial(_in_mode, running=running)}

  def _call(self, doing: str, fn: Callable, images: jax.Array, bind: bool = True):
    try:
      if self.axis_name is None or not bind:
        return fn(images)
      out = jax.vmap(fn, axis_name=self.axis_name)(images[None])
      return jax.tree.map(lambda a: a[0], out)
    except (UserError, KeyboardInterrupt, SystemExit):
      raise
    except Exception as e:  # pylint: disable=broad-except
      if not self.origin:
        raise
      if not bind and _UNBOUND.search(str(e)):  # An init that reduces: bound after all.
        return self._call(doing, fn, images)
      raise UserError(self._explain(e, doing)) from e

  def _explain(self, e: Exception, doing: str) -> str:
    message = ' '.join(str(e).split())[:300]
    unbound = _UNBOUND.search(str(e))
    if unbound:
      name = unbound.group(1).strip("'\".,")
      return (f'{self.origin} reduces over the collective axis {name!r}, but the '
              f'grid binds {self.axis_name!r}: set --config.axis_name={name}.')
    return (f'{self.origin} raised {type(e).__name__} while it was {doing}: {message} '
            f'(--verbose shows the traceback).')


def from_nnx(factory: Callable, num_classes: int, origin: str) -> nn.Module:
  """The NNX module `factory(num_classes, rngs=...)` as a linen Module (flax's
  bridge): its state is the linen variables, NNX's BatchStat the
  `batch_stats` collection, and each call switches the module to NNX's own
  train() or eval() mode."""

  def build(num_classes, *, rngs):
    module = factory(num_classes, rngs=rngs)
    if not isinstance(module, nnx.Module):
      raise UserError(f'{origin} returned {type(module).__name__}, not an nnx.Module '
                      f'(or a flax.linen Module without an `rngs` argument).')
    return module

  return nnx.bridge.ToLinen(build, args=(num_classes,), metadata_fn=None)


def _attribute_order(module: Any) -> dict:
  """{attribute: its own order} of an NNX module, in the order its __init__
  set them; an nnx.List's (or a list's) items by index."""
  if isinstance(module, (nnx.List, list, tuple)):
    children = [(str(i), item) for i, item in enumerate(module)]
  elif isinstance(module, nnx.Module):
    children = [(k, v) for k, v in vars(module).items() if not k.startswith('_')]
  else:
    return {}
  return {k: _attribute_order(v) for k, v in children}


def _ordered(tree: Any, order: Mapping) -> Any:
  """`tree` with each level's keys in `order`'s order (others after them)."""
  if not isinstance(tree, Mapping):
    return tree
  rank = {name: i for i, name in enumerate(order)}
  return {k: _ordered(v, order.get(k, {}))
          for k, v in sorted(tree.items(), key=lambda kv: rank.get(kv[0], len(rank)))}


def _in_mode(module: nnx.Module, images: jax.Array, *, train: bool,
             running: tuple[str, ...] = ()) -> jax.Array:
  if train:
    module.train()
    norm.nnx_running_averages(module, running)
  else:
    module.eval()
  return module(images)


def _string_keys(tree: Any) -> Any:
  """NNX's list indices (int keys) as strings: paths are '/'-joined names, and
  checkpoints keep string keys."""
  if isinstance(tree, Mapping):
    return {str(k): _string_keys(v) for k, v in tree.items()}
  return tree


def _int_keys(tree: Any) -> Any:
  """`_string_keys` undone for NNX: an attribute name is never all digits."""
  if isinstance(tree, Mapping):
    return {int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v)
            for k, v in tree.items()}
  return tree


def _is_array(x: Any) -> bool:
  return hasattr(x, 'shape') and hasattr(x, 'dtype')


def describe(out: Any) -> str:
  """What a module returned, in a few words: 'float32[2, 3]', 'tuple (str, dict)'."""
  if _is_array(out):
    return f'{out.dtype}[{", ".join(map(str, out.shape))}]'
  if isinstance(out, (tuple, list)) and not out:
    return f'an empty {type(out).__name__}'
  if isinstance(out, (tuple, list)):
    return (f'a {type(out).__name__} of {len(out)} ('
            + ', '.join(describe(x) if _is_array(x) else type(x).__name__ for x in out[:4])
            + (', ...' if len(out) > 4 else '') + ')')
  if isinstance(out, Mapping):
    return f'a dict with keys {", ".join(map(repr, list(out)[:8]))}' if out else 'an empty dict'
  return f'a {type(out).__name__}'


def logits_of(out: Any, who: str = 'The model') -> jax.Array:
  """The logits in what a module returned: the logits themselves, the first
  element of a tuple or list (big_vision's ViT returns `(logits, out)`), or a
  dict's 'logits' entry. Anything else is a UserError naming what came back."""
  if _is_array(out):
    return out
  if isinstance(out, (tuple, list)) and out and _is_array(out[0]):
    return out[0]
  if isinstance(out, Mapping) and _is_array(out.get('logits')):
    return out['logits']
  raise UserError(f'{who} returned {describe(out)}; a model returns its logits [batch, classes], '
                  f'a tuple or list whose first element they are, or a dict with a '
                  f"'logits' entry.")
