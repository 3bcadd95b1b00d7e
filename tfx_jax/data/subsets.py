"""Stratified, seeded subsets of a split's examples: a held-out eval fraction
(datasets without a test split) and a target set of K examples per class.

Both draw one seeded order per class, so they are the same on every machine
and every rerun, and a smaller subset lies inside a larger one.
"""

from __future__ import annotations

import numpy as np

from tfx_jax.errors import UserError


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
  """Class -> the positions of its examples, in an order drawn from `seed`."""
  labels = np.asarray(labels)
  return {int(c): np.flatnonzero(labels == c)[
              np.random.default_rng([seed, int(c)]).permutation(int(np.sum(labels == c)))]
          for c in np.unique(labels)}


def holdout(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
  """Boolean mask of the held-out (eval) examples: round(fraction * count) of
  each class, at least one where a class has two or more, never all of one."""
  if not 0 < fraction < 1:
    raise UserError(f'The eval fraction must be in (0, 1), got {fraction}; e.g. 0.2.')
  mask = np.zeros(len(labels), bool)
  for order in class_orders(labels, seed).values():
    k = min(max(int(round(fraction * len(order))), 1), len(order) - 1)
    mask[order[:k]] = True
  return mask


def per_class(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
  """Sorted positions of the first k examples of each class in `seed`'s order
  (all of a class that has fewer); UserError if k < 1."""
  if k < 1:
    raise UserError(f'target_examples_per_class must be 1 or more, got {k}.')
  return np.sort(np.concatenate([order[:k] for order in class_orders(labels, seed).values()]))
