"""The frozen prefix's output, computed once per example (docs/tune.md#the-feature-cache).

When every group below the first group that trains is frozen, and the output
of the prefix's last module for an example is the same every time (no
augmentation, no dropout or batch statistics up to there), the train step
need not compute the prefix at all. The train iterator's plan says which
examples batch i holds; the first time an example comes, its image is loaded
and its prefix output computed (forward only) and kept on the host by
example; later batches load no image at all. The train step takes that output
in place of the module's (flax.linen.intercept_methods), so XLA drops
everything below the cut. The layers above, dropout after the cut included,
run as before: the numbers equal the uncached step's to float rounding. The
evaluation set's prefix outputs (evaluation mode) are computed once per run
too. Nothing of the cache is checkpointed: a resumed run computes the same
outputs again.

Which module: the prefix's group paths from the last back, the first whose
output is the same every time (`choose_cut`: two dropout keys, rows in two
orders and beside other rows, as a BatchNorm on the batch's statistics would
change them; config.frozen_norm=running fixes a frozen BatchNorm's). A linear
probe on the presets cuts at fc6's output: fc7 reads fc6's output through
dropout, so fc7's output is not fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tfx_jax.models import net as net_lib
from tfx_jax.models import norm
from tfx_jax.training import steps


def _bound(model: net_lib.Net, fn: Callable, images: jax.Array):
  """fn(images) with the model's collective axis bound, as Net.apply binds it."""
  if model.axis_name is None:
    return fn(images)
  return jax.tree.map(lambda a: a[0], jax.vmap(fn, axis_name=model.axis_name)(images[None]))


def make_prefix(model: net_lib.Net, path: str, preprocess: Callable,
                train: bool = True, frozen: Sequence[str] = ()) -> Callable:
  """Compiled prefix(variables, images, rng) -> the output of the module at
  `path` (float32) in training mode with `frozen` frozen (their BatchNorm as
  config.frozen_norm says), or in evaluation mode if not `train`; an empty
  array when no call of it, or no one array, comes out."""

  def prefix(variables, images, rng):
    captured = []

    def capture(next_fun, args, kwargs):
      out = next_fun(*args, **kwargs)
      captured.append(out)
      return out

    def run(x):
      with (nn.intercept_methods(steps.intercepting(path, capture)),
            norm.running_averages(model.running_layers(tuple(frozen)) if train else ())):
        model.module.apply(variables, x, train=train, rngs={'dropout': rng},
                           mutable=[k for k in variables if k != 'params'] if train else False)
      if not captured or not isinstance(captured[0], jax.Array):
        return jnp.zeros((x.shape[0], 0))  # No call, or not one array: not a cut.
      return captured[0].astype(jnp.float32)

    return _bound(model, run, preprocess(images))

  return jax.jit(prefix)


class CachedBatches(Iterator[dict]):
  """A train iterator's batches with 'features' (the prefix's output, computed
  the first time each example comes) instead of 'image'. Its state is the
  iterator's ({'next_batch': k}), so a checkpoint resumes exactly."""

  def __init__(self, data, prefixes: tuple[Callable, Callable], variables, batch_size: int,
               mesh: Mesh, features_shape: tuple[int, ...]):
    self._data, self._plan, self._load = data, data.plan, data.load
    (self._prefix, self._eval_prefix), self._variables, self._mesh = prefixes, variables, mesh
    self._batch_size, self.features_shape = batch_size, features_shape
    self._next = int(data.get_state()['next_batch'])
    positions = np.asarray(self._plan.positions)
    self._order = np.argsort(positions, kind='stable')
    self._sorted = positions[self._order]
    self._rows = np.empty((len(positions), *features_shape), np.float32)
    self._have = np.zeros(len(positions), bool)
    self.computed = 0  # Examples whose prefix output was computed.
    self._eval: dict[int, list] = {}

  def __next__(self) -> dict:
    plan = self._plan[self._next]
    self._next += 1
    slots = self._order[np.searchsorted(self._sorted, plan['index'])]
    missing = np.unique(slots[~self._have[slots]])
    if len(missing):
      images = self._load({'index': self._plan.positions[missing],
                           'label': np.zeros(len(missing), np.int32)})['image']
      self._rows[missing] = self._features(images)[:len(missing)]
      self._have[missing] = True
      self.computed += len(missing)
    return {'features': self._rows[slots], 'label': plan['label'].astype(np.int32)}

  def _features(self, images: np.ndarray) -> np.ndarray:
    padded = steps.pad_batch({'image': images, 'label': np.zeros(len(images), np.int32)},
                             self._batch_size)['image']
    return np.asarray(self._prefix(self._variables,
                                   steps.global_batch({'image': padded}, self._mesh)['image'],
                                   jax.random.PRNGKey(0)))

  def eval_batches(self, batches: Iterable[Mapping]) -> list[dict]:
    """`batches` (eval_cache.EvalCache's: global arrays with a mask) with the
    prefix's output in evaluation mode instead of 'image', computed once."""
    if id(batches) not in self._eval:
      self._eval[id(batches)] = [
          {'features': self._eval_prefix(self._variables, b['image'], jax.random.PRNGKey(0)),
           'label': b['label'], 'mask': b['mask']} for b in batches]
    return self._eval[id(batches)]

  def get_state(self) -> Any:
    return {'next_batch': self._next}

  def set_state(self, state: Any) -> None:
    self._next = int(state['next_batch'])

  def close(self) -> None:
    self._data.close()


def choose_cut(model: net_lib.Net, paths: Sequence[str], variables, images: np.ndarray,
               preprocess: Callable, mesh: Mesh) -> tuple[str, Callable] | None:
  """(path, prefix) of the last module among `paths` (the frozen prefix's, in
  order) whose output is the same every time for an example; None if none."""
  batch = steps.global_batch({'image': images}, mesh)['image']
  host, half = np.asarray(images), len(images) // 2
  # The first half's rows again, in reverse order (on other devices) and beside
  # other rows than before: a batch's statistics, or dropout, would change them.
  other = np.concatenate([host[:half], host[:half]])[::-1].copy()
  for path in reversed(paths):
    prefix = make_prefix(model, path, preprocess, frozen=paths)
    one = np.asarray(prefix(variables, batch, jax.random.PRNGKey(1)))
    if not one.size:
      continue
    two = np.asarray(prefix(variables, steps.global_batch({'image': other}, mesh)['image'],
                            jax.random.PRNGKey(2)))[::-1]
    if np.allclose(one[:half], two[:half], rtol=1e-5, atol=1e-6):
      return path, prefix
  return None


def setup(model: net_lib.Net, prefix_paths: Sequence[str], variables, data,
          preprocess: Callable, mesh: Mesh, *, batch_size: int, budget_mb: float,
          augment: bool, eval_examples: int = 0, log: Callable[[str], None] = print
          ) -> tuple[Any, tuple[str, tuple[int, ...], tuple[int, ...]] | None]:
  """(batches, cut): the run's train batches (input_pipeline.train_iterator's)
  as CachedBatches of its frozen prefix (`prefix_paths`, in order) and the
  steps' `cut` (path, image shape, features' shape), or `data` itself and None when no cache applies; one line to
  `log` says which. The budget holds the train examples' outputs and the
  `eval_examples`'."""
  data, cut, note = _setup(model, prefix_paths, variables, data, preprocess, mesh,
                           batch_size=batch_size, budget_mb=budget_mb, augment=augment,
                           eval_examples=eval_examples)
  if note:
    log(f'  {note}')
  return data, cut


def _setup(model, prefix_paths, variables, data, preprocess, mesh, *, batch_size,
           budget_mb, augment, eval_examples):
  if not prefix_paths or budget_mb <= 0:
    return data, None, ''
  why = ('augmentation changes the inputs' if augment
         else 'NNX modules have no module paths to intercept' if model.is_nnx
         else 'several processes' if jax.process_count() > 1 else '')
  if why:
    return data, None, f'feature cache off: {why}.'
  images = data.load(data.plan[data.get_state()['next_batch']])['image']
  own = jax.tree.map(jnp.copy, variables)  # The train steps donate the state's.
  found = choose_cut(model, prefix_paths, own, images, preprocess, mesh)
  if found is None:
    return data, None, ('feature cache off: every frozen layer\'s output changes from '
                        'call to call (dropout or batch statistics).')
  path, prefix = found
  shape = jax.eval_shape(prefix, own, jax.ShapeDtypeStruct(images.shape, images.dtype),
                         jax.random.PRNGKey(0)).shape[1:]
  need = (len(data.plan.positions) + eval_examples) * int(np.prod(shape)) * 4 / 2**20
  if need > budget_mb:
    return data, None, (f'feature cache off: the output of {path} for every example needs '
                        f'{need:.0f} MB, over --config.feature_cache_mb={budget_mb:g}.')
  prefixes = prefix, make_prefix(model, path, preprocess, train=False)
  return CachedBatches(data, prefixes, own, batch_size, mesh, tuple(shape)), (
      path, images.shape[1:], tuple(shape)), (
      f'feature cache: the frozen layers\' output at {path} ({"x".join(map(str, shape))} '
      f'per example, {need:.0f} MB) is computed once per example.')
