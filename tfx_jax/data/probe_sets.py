"""Probe sets: a fixed, seed-determined, class-balanced sample of a task's train
or eval split, decoded once and held in memory (for layer features, linear
probes and scores: tfx_jax.analysis). Centre-cropped, never augmented, so
every network sees the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfx_jax.data import input_pipeline, subsets
from tfx_jax.data.datasets import DatasetSpec


def probe_set(name: str | DatasetSpec, classes: Sequence[int], split: str, examples: int,
              seed: int, *, data_dir: str | None = None,
              cache_dir: str | None = None) -> dict[str, np.ndarray]:
  """{'image': uint8 [n, H, W, C], 'label': int32 [n] (i: classes[i])}: about
  `examples` images of `split` ('train' or 'eval'), examples // len(classes) of
  each class (at least 1; all of a class that has fewer), the first in
  `seed`'s order of each class (subsets.per_class), in dataset order."""
  if split not in ('train', 'eval'):
    raise ValueError(f"split is 'train' or 'eval', not {split!r}.")
  spec, _, _, source, positions, labels = input_pipeline.open_subset(
      name, split, classes, 1, data_dir, 0, 1, cache_dir)
  keep = subsets.per_class(labels, max(1, examples // len(classes)), seed)
  return input_pipeline.LoadBatch(source, spec)({'index': positions[keep],
                                                 'label': labels[keep]})
