"""The frozen prefix's output, computed once per example (docs/tune.md#the-feature-cache).

When every group below the first group that trains is frozen, and the output
of the prefix's last module for an example is the same every time (no
augmentation, no dropout or batch statistics up to there), the train step
need not compute the prefix at all. The first time an example comes, its
prefix output is computed (forward only) and kept on the host, keyed by a
hash of its image bytes; the train step then takes that output in place of
the module's (flax.linen.intercept_methods), so XLA drops everything below
the cut. The layers above, dropout after the cut included, run as before:
the numbers equal the uncached step's to float rounding. Nothing of the cache
is checkpointed: a resumed run computes the same outputs again.

Which module: the prefix's group paths from the last back, the first whose
output is the same every time (`choose_cut`: two dropout keys, rows in two
orders and beside other rows, as a BatchNorm on the batch's statistics would
change them; config.frozen_norm=running fixes a frozen BatchNorm's). A linear
probe on the presets cuts at fc6's output: fc7 reads fc6's output through
dropout, so fc7's output is not fixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
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
                frozen: Sequence[str] = ()) -> Callable:
  """Compiled prefix(variables, images, rng) -> the output of the module at
  `path` in training mode (float32), with `frozen` frozen (their BatchNorm as
  config.frozen_norm says); None inside when no call of it happens."""

  def prefix(variables, images, rng):
    captured = []

    def capture(next_fun, args, kwargs):
      out = next_fun(*args, **kwargs)
      captured.append(out)
      return out

    def run(x):
      with (nn.intercept_methods(steps.intercepting(path, capture)),
            norm.running_averages(model.running_layers(tuple(frozen)))):
        model.module.apply(variables, x, train=True, rngs={'dropout': rng},
                           mutable=[k for k in variables if k != 'params'] or False)
      if not captured or not isinstance(captured[0], jax.Array):
        return jnp.zeros((x.shape[0], 0))  # No call, or not one array: not a cut.
      return captured[0].astype(jnp.float32)

    return _bound(model, run, preprocess(images))

  return jax.jit(prefix)


class FeatureCache:
  """Prefix outputs by example, filled as examples come (`features`)."""

  def __init__(self, prefix: Callable, variables, batch_size: int, mesh: Mesh):
    self._prefix, self._variables = prefix, variables
    self._batch_size, self._mesh = batch_size, mesh
    self._rows: dict[bytes, np.ndarray] = {}
    self.computed = 0  # Examples whose prefix output was computed.

  def features(self, images: np.ndarray) -> np.ndarray:
    keys = [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]
    missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
    if missing:
      where = {k: i for i, k in enumerate(keys)}
      rows = np.stack([images[where[k]] for k in missing])
      padded = steps.pad_batch({'image': rows, 'label': np.zeros(len(rows), np.int32)},
                               self._batch_size)['image']
      out = np.asarray(self._prefix(self._variables,
                                    steps.global_batch({'image': padded}, self._mesh)['image'],
                                    jax.random.PRNGKey(0)))
      self._rows.update(zip(missing, out[:len(missing)]))
      self.computed += len(missing)
    return np.stack([self._rows[k] for k in keys])


class CachedBatches(Iterator[dict]):
  """A train iterator's batches with 'features' (the cache's) instead of
  'image'; its state is the iterator's, so a checkpoint resumes exactly."""

  def __init__(self, data, cache: FeatureCache, features_shape: tuple[int, ...]):
    self._data, self._cache = data, cache
    self.features_shape = features_shape

  def __next__(self) -> dict:
    batch = next(self._data)
    return {'features': self._cache.features(np.asarray(batch['image'])),
            'label': batch['label']}

  def get_state(self) -> Any:
    return self._data.get_state()

  def set_state(self, state: Any) -> None:
    self._data.set_state(state)

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
    prefix = make_prefix(model, path, preprocess, paths)
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
          augment: bool, log: Callable[[str], None] = print
          ) -> tuple[Any, tuple[str, tuple[int, ...]] | None]:
  """(batches, cut): the run's train batches with the cached features of its
  frozen prefix (`prefix_paths`, in order) and the step's `cut`, or `data`
  itself and None when no cache applies; one line to `log` says which."""
  data, cut, note = _setup(model, prefix_paths, variables, data, preprocess, mesh,
                           batch_size=batch_size, budget_mb=budget_mb, augment=augment)
  if note:
    log(f'  {note}')
  return data, cut


def _setup(model, prefix_paths, variables, data, preprocess, mesh, *, batch_size,
           budget_mb, augment):
  if not prefix_paths or budget_mb <= 0:
    return data, None, ''
  why = ('augmentation changes the inputs' if augment
         else 'NNX modules have no module paths to intercept' if model.is_nnx
         else 'several processes' if jax.process_count() > 1 else '')
  if why:
    return data, None, f'feature cache off: {why}.'
  start = data.get_state()
  images = np.asarray(next(data)['image'])
  data.set_state(start)
  own = jax.tree.map(jnp.copy, variables)  # The train steps donate the state's.
  found = choose_cut(model, prefix_paths, own, images, preprocess, mesh)
  if found is None:
    return data, None, ('feature cache off: every frozen layer\'s output changes from '
                        'call to call (dropout or batch statistics).')
  path, prefix = found
  shape = jax.eval_shape(prefix, own, jax.ShapeDtypeStruct(images.shape, images.dtype),
                         jax.random.PRNGKey(0)).shape[1:]
  need = getattr(data, 'num_examples', 0) * int(np.prod(shape)) * 4 / 2**20
  if need > budget_mb:
    return data, None, (f'feature cache off: the output of {path} for every example needs '
                        f'{need:.0f} MB, over --config.feature_cache_mb={budget_mb:g}.')
  cache = FeatureCache(prefix, own, batch_size, mesh)
  return CachedBatches(data, cache, tuple(shape)), (path, images.shape[1:]), (
      f'feature cache: the frozen layers\' output at {path} ({"x".join(map(str, shape))} '
      f'per example, {need:.0f} MB) is computed once per example.')
