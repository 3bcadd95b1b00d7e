"""A model's forward passes over a probe set held in memory: every group's
features (`activations.features`) and the top-1, in jitted batches of one
shape (the last one padded), at the grid's precision. Nothing is trained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tfx_jax.analysis import activations
from tfx_jax.models import net
from tfx_jax.training import precision as precision_lib


class Forward:
  """One model's jitted passes; `preprocess` maps uint8 images to its input."""

  def __init__(self, model, groups: Sequence[str], preprocess: Callable,
               batch_size: int, precision: str = precision_lib.DEFAULT,
               max_features: int | None = None):
    self.groups, self.batch_size = tuple(groups), batch_size

    def inputs(variables, images):
      return ({**variables, 'params': precision_lib.cast(variables['params'], precision)},
              precision_lib.cast(preprocess(images), precision))

    def features(variables, images):
      with precision_lib.matmuls(precision):
        return activations.features(model, *inputs(variables, images), self.groups,
                                    max_features)

    def correct(variables, images, labels):
      with precision_lib.matmuls(precision):
        logits = net.logits_of(model.apply(*inputs(variables, images), train=False))
      return jnp.sum(jnp.argmax(logits, axis=-1) == labels)

    self._features, self._correct = jax.jit(features), jax.jit(correct)

  def _batches(self, *arrays: np.ndarray):
    """(count, each array's batch padded to batch_size) over the arrays' rows."""
    n = len(arrays[0])
    for lo in range(0, n, self.batch_size):
      count = min(self.batch_size, n - lo)
      yield count, [np.concatenate([a[lo:lo + count],
                                    np.zeros((self.batch_size - count, *a.shape[1:]),
                                             a.dtype)])
                    for a in arrays]

  def features(self, variables: Mapping, images: np.ndarray) -> dict[str, np.ndarray]:
    """{group: float32 [n, d]} for uint8 images [n, H, W, C], d <= max_features."""
    parts = {group: [] for group in self.groups}
    for count, (batch,) in self._batches(images):
      for group, value in jax.device_get(self._features(variables, batch)).items():
        parts[group].append(np.asarray(value[:count]))
    return {group: np.concatenate(values) for group, values in parts.items()}

  def top1(self, variables: Mapping, images: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of `images` whose top logit is their label."""
    correct = 0
    for count, (batch, label) in self._batches(images, labels.astype(np.int32)):
      mask = np.arange(self.batch_size) < count
      correct += int(self._correct(variables, batch, np.where(mask, label, -1)))
    return correct / len(images)
