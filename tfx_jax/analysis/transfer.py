"""From features to the analysis of one grid's (split, seed): CKA between two
networks layer by layer, each layer's cheap predictors of transfer (linear
probe, LogME, H-score), and how well a predictor's values by n rank the
grid's measured transfer (Spearman, Kendall) and which n it would choose.

Features are {group: float32 [n, d]} over the same probe images, in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tfx_jax.analysis import measures

Features = Mapping[str, np.ndarray]
# A predictor's verdict from its mean Spearman rho over seeds against the measured top-1.
AGREES, INVERTED = 0.5, -0.5


def cka(x: Features, y: Features, groups: Sequence[str], batch_size: int) -> list[list[float]]:
  """[L][L] unbiased minibatch linear CKA (Nguyen et al. 2021) between x's layer
  i and y's layer j, the examples taken batch_size at a time (a last batch of
  fewer than 4 is left out); the two networks side by side in each minibatch."""
  n, count = len(x[groups[0]]), len(groups)
  edges = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)
           if min(lo + batch_size, n) - lo >= 4]
  if not edges:
    raise ValueError(f'CKA needs 4 or more examples, got {n}.')
  both = measures.minibatch_cka(
      [[x[g][lo:hi] for g in groups] + [y[g][lo:hi] for g in groups] for lo, hi in edges])
  return np.asarray(both)[:count, count:].astype(float).tolist()


def diagonal(matrix: Sequence[Sequence[float]]) -> list[float]:
  return [float(matrix[i][i]) for i in range(len(matrix))]


def predictors(train: Features, train_y: np.ndarray, eval_: Features, eval_y: np.ndarray,
               num_classes: int, groups: Sequence[str],
               probe_steps: int) -> dict[str, dict[str, float]]:
  """{group: {'probe_top1', 'probe_train_top1', 'logme', 'h_score',
  'h_score_shrunk'}} of one network's layer features for a task: the probe
  fitted on `train` and scored on `eval_`, the scores on `train`."""
  out = {}
  # Zero units change no probe (standardised to 0, their weights stay 0), no
  # LogME (zero singular values) and no H-score (outside the pseudo-inverse):
  # each layer is padded to the next power of two, so a few compiled functions
  # serve them all, each at most twice the layer's own width (not the widest's:
  # H-score's d x d covariance is the analysis's largest matrix). The shrunk
  # H-score's target, tr(cov)/d I, counts the units: not padded.
  def padded(x):
    return np.pad(x, ((0, 0), (0, padded_width(x.shape[1]) - x.shape[1])))

  for group in groups:
    x = padded(train[group])
    probe = measures.linear_probe(x, train_y, padded(eval_[group]), eval_y, num_classes,
                                  steps=probe_steps)
    out[group] = {
        'probe_top1': probe['eval_top1'], 'probe_train_top1': probe['train_top1'],
        'logme': float(measures.logme(x, train_y, num_classes)),
        'h_score': float(measures.h_score(x, train_y, num_classes)),
        'h_score_shrunk': float(measures.h_score(train[group], train_y, num_classes,
                                                 shrinkage=True))}
  return out


def padded_width(d: int) -> int:
  """The width `predictors` pads a layer of d units to: the next power of two."""
  return 1 << (d - 1).bit_length()


def _finite(x: float) -> float | None:
  return float(x) if x is not None and math.isfinite(x) else None


def _mean_sd(values: Sequence[float | None]) -> dict:
  kept = [v for v in values if v is not None]
  return {'mean': float(np.mean(kept)) if kept else None,
          'sd': float(np.std(kept, ddof=1)) if len(kept) > 1 else None}


def choose(values: Sequence[float], ns: Sequence[int]) -> int:
  """The n with the highest value; of equal ones the deepest (more layers
  transferred for the same score)."""
  best = max(values)
  return max(n for n, v in zip(ns, values) if v == best)


def agreement(predicted: Mapping[int, Sequence[float]], measured: Mapping[int, Sequence[float]],
              ns: Sequence[int]) -> dict:
  """How a predictor's values by n (per seed) rank the measured top-1 by n of
  the same seeds: Spearman's rho and Kendall's tau per seed, their mean and
  sd; the n each would choose (per seed, and from the means over seeds), and
  what the predictor's choice costs against the grid's best n, in points of
  the mean measured top-1. None where a seed's values are constant."""
  seeds = sorted(set(predicted) & set(measured))
  rho = {s: _finite(measures.spearman(predicted[s], measured[s])) for s in seeds}
  tau = {s: _finite(measures.kendall_tau(predicted[s], measured[s])) for s in seeds}
  mean_predicted = np.mean([predicted[s] for s in seeds], axis=0)
  mean_measured = np.mean([measured[s] for s in seeds], axis=0)
  chosen, best = choose(mean_predicted, ns), choose(mean_measured, ns)
  rho_mean = _mean_sd(list(rho.values()))['mean']
  verdict = ('unknown' if rho_mean is None else 'agrees' if rho_mean >= AGREES
             else 'inverted' if rho_mean <= INVERTED else 'disagrees')
  return {
      'seeds': seeds,
      'spearman': {'per_seed': {str(s): rho[s] for s in seeds}, **_mean_sd(list(rho.values()))},
      'kendall': {'per_seed': {str(s): tau[s] for s in seeds}, **_mean_sd(list(tau.values()))},
      'chosen_n': chosen, 'best_n': best,
      'chosen_n_per_seed': {str(s): choose(predicted[s], ns) for s in seeds},
      'best_n_per_seed': {str(s): choose(measured[s], ns) for s in seeds},
      'cost_points': 100 * float(mean_measured[ns.index(best)] - mean_measured[ns.index(chosen)]),
      'verdict': verdict}
