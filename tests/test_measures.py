"""tfx_jax.analysis.measures against hand-worked cases, the published formulas
written out again in plain NumPy (float64), and the properties the papers prove."""

import itertools
import math

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from tfx_jax.analysis import measures, transfer

RNG = np.random.default_rng(0)


def normal(*shape, rng=RNG):
  return rng.normal(size=shape).astype(np.float32)


def orthogonal(d, rng=RNG):
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  return q.astype(np.float32)


# ----------------------------------------------------------------------------- CKA


def test_linear_cka_of_one_dimensional_features_is_their_squared_correlation():
  # x = [1, 2, 3], y = [1, 3, 2]; centred: [-1, 0, 1] and [-1, 1, 0]. Linear CKA of
  # one unit each is (xc . yc)^2 / (|xc|^2 |yc|^2) = 1^2 / (2 * 2) = 1/4.
  x = np.array([[1.], [2.], [3.]], np.float32)
  y = np.array([[1.], [3.], [2.]], np.float32)
  assert float(measures.linear_cka(x, y)) == pytest.approx(0.25, abs=1e-6)
  np.testing.assert_allclose(measures.cka_matrix([x, y]), [[1, 0.25], [0.25, 1]], atol=1e-6)


def test_cka_of_features_with_themselves_is_one():
  x = normal(100, 20)
  assert float(measures.linear_cka(x, x)) == pytest.approx(1, abs=1e-5)
  np.testing.assert_allclose(measures.cka_matrix([x, x]), np.ones((2, 2)), atol=1e-5)
  batches = [(x[i:i + 25], x[i:i + 25]) for i in range(0, 100, 25)]
  np.testing.assert_allclose(measures.minibatch_cka(batches), np.ones((2, 2)), atol=1e-5)


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling_only():
  x = normal(200, 8)
  y = np.tanh(x @ normal(8, 6)) + 0.5 * normal(200, 6)
  q, scaled = orthogonal(8), 7.5 * x
  # A generic invertible map: unit i stretched by 10^(1 - 2i/7), then rotated.
  stretch = (np.logspace(1, -1, 8, dtype=np.float32)[:, None] * orthogonal(8)).astype(np.float32)
  base = float(measures.linear_cka(x, y))
  batches = lambda a: [(a[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]  # noqa: E731
  unbiased = float(measures.minibatch_cka(batches(x))[0, 1])
  for mapped in (x @ q, scaled, scaled @ q):
    assert float(measures.linear_cka(mapped, y)) == pytest.approx(base, abs=1e-5)
    assert float(measures.cka_matrix([mapped, y])[0, 1]) == pytest.approx(base, abs=1e-5)
    assert float(measures.minibatch_cka(batches(mapped))[0, 1]) == pytest.approx(
        unbiased, abs=1e-5)
  assert abs(float(measures.linear_cka(x @ stretch, y)) - base) > 0.05
  assert abs(float(measures.minibatch_cka(batches(x @ stretch))[0, 1]) - unbiased) > 0.05


def test_unbiased_hsic_is_the_u_statistic_of_song_et_al():
  # HSIC_1 is the U-statistic of E[k_ij l_ij] + E[k_ij] E[l_qr] - 2 E[k_ij l_iq]: means
  # over distinct indices, written out here as loops (Song et al. 2012 prove them equal).
  rng = np.random.default_rng(1)
  n = 6
  x = rng.normal(size=(n, 3)) + 4  # A mean, which HSIC_1 must not see.
  y = rng.normal(size=(n, 2)) + x[:, :1]
  k, l = x @ x.T, y @ y.T

  def mean_over_distinct(order, term):
    return np.mean([term(*ix) for ix in itertools.permutations(range(n), order)])

  expected = (mean_over_distinct(2, lambda i, j: k[i, j] * l[i, j])
              + mean_over_distinct(4, lambda i, j, q, r: k[i, j] * l[q, r])
              - 2 * mean_over_distinct(3, lambda i, j, q: k[i, j] * l[i, q]))
  got = measures.unbiased_hsic_matrix([x.astype(np.float32), y.astype(np.float32)])
  assert float(got[0, 1]) == pytest.approx(expected, rel=1e-4)
  assert float(got[1, 0]) == pytest.approx(expected, rel=1e-4)
  with pytest.raises(ValueError, match='4 or more'):
    measures.unbiased_hsic_matrix([x[:3], y[:3]])


def test_minibatch_cka_approaches_full_data_cka_where_biased_minibatches_do_not():
  # n = 4096 examples of 16 and 8 units: the full-data biased CKA's bias (of order
  # d / n) is small. In batches of 64 the biased estimate is inflated.
  n = 4096
  x = normal(n, 16)
  y = np.maximum(x @ normal(16, 8), 0) + 2 * normal(n, 8)
  full = float(measures.linear_cka(x, y))
  batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]
  unbiased = float(measures.minibatch_cka(batches)[0, 1])
  biased = np.mean([float(measures.linear_cka(a, b)) for a, b in batches])
  assert unbiased == pytest.approx(full, abs=0.01)
  assert biased - full > 0.05


def test_unbiased_cka_of_independent_features_is_near_zero_biased_is_not():
  # Independent features, d = 256 units on 64 examples a batch: the biased CKA of
  # each batch is about 0.8, the unbiased one over 10 batches about 0.
  batches = [(normal(64, 256), normal(64, 256)) for _ in range(10)]
  assert min(float(measures.linear_cka(a, b)) for a, b in batches) > 0.7
  assert abs(float(measures.minibatch_cka(batches)[0, 1])) < 0.05


def test_cka_matrix_between_several_layers():
  # Each entry against Kornblith et al.'s feature-space formula in NumPy, float64.
  x = normal(128, 10)
  layers = [x, np.tanh(x @ normal(10, 12)), normal(128, 5)]
  centred = [np.float64(f) - np.float64(f).mean(0) for f in layers]
  got = np.asarray(measures.cka_matrix(layers))
  for (i, a), (j, b) in itertools.product(enumerate(centred), repeat=2):
    expected = np.sum((b.T @ a) ** 2) / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert got[i, j] == pytest.approx(expected, abs=1e-5)
  assert float(measures.linear_cka(layers[0], layers[1])) == pytest.approx(got[0, 1], abs=1e-5)


# --------------------------------------------------------------------------- LogME


def logme_numpy(f, labels, num_classes, iterations=1000):
  """You et al. 2021, Algorithm 1, with A and m as matrices (no SVD), in float64."""
  f = np.asarray(f, np.float64)
  n, d = f.shape
  sigma = np.clip(np.linalg.eigvalsh(f.T @ f), 0, None)  # PSD: rounding gives -1e-13s.
  evidences = []
  for c in range(num_classes):
    y = (labels == c).astype(np.float64)
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
      a = alpha * np.eye(d) + beta * f.T @ f
      m = beta * np.linalg.solve(a, f.T @ y)
      gamma = np.sum(beta * sigma / (alpha + beta * sigma))
      alpha, beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - y) ** 2)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    evidences.append(n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                     - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m
                     - np.linalg.slogdet(a)[1] / 2)
  return np.mean(evidences) / n


def test_logme_of_one_feature_has_a_closed_form():
  # One feature f: y ~ N(0, I/beta + f f^T/alpha) has variance v1 = 1/beta + |f|^2/alpha
  # along f and v0 = 1/beta in the n - 1 other directions. With p1 = (f.y)^2/|f|^2 and
  # p0 = |y|^2 - p1, the log likelihood -n/2 log 2pi - 1/2 log v1 - (n-1)/2 log v0
  # - p1/(2 v1) - p0/(2 v0) is concave in 1/v1, 1/v0 and peaks at v1 = p1, v0 =
  # p0/(n-1), which alpha > 0 allows if p1 > v0: -n/2 (1 + log 2pi) - 1/2 log p1
  # - (n-1)/2 log(p0/(n-1)). If p1 <= v0 the peak is on v1 = v0 (alpha = inf, the
  # feature unused), v0 = |y|^2/n: -n/2 (1 + log 2pi) - n/2 log(|y|^2/n).
  n, common = 4, -4 / 2 * (1 + math.log(2 * math.pi))  # -5.675754
  labels = np.array([0, 0, 1, 1])
  # f = [-2, -1, 1, 2]: |f|^2 = 10; for either class f.y = +-3, |y|^2 = 2, so p1 = 0.9,
  # p0 = 1.1, v0 = 1.1/3 < p1: -5.675754 + 0.052680 + 1.504953 = -4.118121 a class.
  f = np.array([[-2.], [-1.], [1.], [2.]], np.float32)
  interior = common - 0.5 * math.log(0.9) - 1.5 * math.log(1.1 / 3)
  assert interior == pytest.approx(-4.118121, abs=1e-6)
  assert float(measures.logme(f, labels, 2)) == pytest.approx(interior / n, abs=1e-5)
  # f = [1, 2, 3, 4]: |f|^2 = 30. Class 1, y = [0, 0, 1, 1]: f.y = 7, p1 = 49/30, p0 =
  # 11/30, v0 = 11/90 < p1: -5.675754 - 0.245311 + 3.152872 = -2.768194. Class 0,
  # y = [1, 1, 0, 0]: f.y = 3, p1 = 0.3 < v0 = 1.7/3: -5.675754 - 2 log 0.5 = -4.289460.
  f = np.array([[1.], [2.], [3.], [4.]], np.float32)
  class_1 = common - 0.5 * math.log(49 / 30) - 1.5 * math.log(11 / 90)
  class_0 = common - 2 * math.log(2 / 4)
  assert (class_0, class_1) == pytest.approx((-4.289460, -2.768194), abs=1e-6)
  assert float(measures.logme(f, labels, 2)) == pytest.approx((class_0 + class_1) / 2 / n,
                                                              abs=1e-5)


@pytest.mark.parametrize('n,d', [(60, 5), (24, 40)])  # d > n: F^T F is singular.
def test_logme_matches_the_papers_formulas_in_numpy(n, d):
  rng = np.random.default_rng(n)
  labels = np.arange(n) % 3
  f = (rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(3, d))[labels]).astype(np.float32)
  expected = logme_numpy(f, labels, 3)
  assert float(measures.logme(f, labels, 3)) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_logme_prefers_features_that_hold_the_labels():
  # Noise features explain no class better than noise (alpha -> inf, no NaN there).
  labels = np.arange(60) % 3
  informative = normal(60, 5) + 3 * normal(3, 5)[labels]
  noise = float(measures.logme(normal(60, 5), labels, 3))
  assert math.isfinite(noise)
  assert float(measures.logme(informative, labels, 3)) > noise + 0.1


# ------------------------------------------------------------------------- H-score


def test_h_score_by_hand():
  # f = [0, 2, 4, 6], labels [0, 0, 1, 1]: centred f = [-3, -1, 1, 3], cov = 20/n;
  # class means 1 and 5, E[f|y] centred = [-2, -2, 2, 2], cov = 16/n; H = 16/20.
  f = np.array([[0.], [2.], [4.], [6.]], np.float32)
  labels = np.array([0, 0, 1, 1])
  assert float(measures.h_score(f, labels, 2)) == pytest.approx(0.8, abs=1e-6)
  # The unit twice: cov = c 11^T, pinv = 11^T / (4c), cov(E[f|y]) = c' 11^T, and
  # tr(11^T 11^T) c'/(4c) = 4 c'/(4c): the same 0.8, where an inverse would fail.
  assert float(measures.h_score(np.hstack([f, f]), labels, 2)) == pytest.approx(0.8, abs=1e-5)
  # The corners of a square, labelled by row: centred f = (+-1, +-1), cov = I * 4/n;
  # class means (1, 0) and (1, 2), centred (0, -+1), cov = diag(0, 4/n); H = 1.
  square = np.array([[0., 0.], [2., 0.], [0., 2.], [2., 2.]], np.float32)
  assert float(measures.h_score(square, labels, 2)) == pytest.approx(1.0, abs=1e-6)


def test_h_score_is_invariant_to_invertible_linear_maps():
  labels = np.arange(300) % 5
  f = normal(300, 6) + normal(5, 6)[labels]
  a = (np.diag([1., 2., 3., 0.5, 1.5, 4.]) @ orthogonal(6)).astype(np.float32)
  base = float(measures.h_score(f, labels, 5))
  assert 0.5 < base < 4  # At most min(d, C - 1) = 4.
  assert float(measures.h_score(f @ a + 3, labels, 5)) == pytest.approx(base, rel=1e-4)
  noise = np.hstack([f[:, :3], normal(300, 3)])  # Half the units replaced with noise:
  assert float(measures.h_score(noise, labels, 5)) < base - 0.1  # that does change it.


def test_regularised_h_score_uses_ledoit_wolf_shrinkage():
  rng = np.random.default_rng(3)
  labels = np.arange(40) % 4
  f = rng.normal(size=(40, 30)) + rng.normal(size=(4, 30))[labels]  # d near n
  lw = LedoitWolf().fit(f)
  centred = f - f.mean(0)
  means = np.stack([centred[labels == c].mean(0) for c in range(4)])[labels]
  expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * means.T @ means
                                                       / len(f)))
  f32 = f.astype(np.float32)
  assert float(measures.ledoit_wolf_shrinkage(centred.astype(np.float32))) == pytest.approx(
      lw.shrinkage_, rel=1e-4)
  assert float(measures.h_score(f32, labels, 4, shrinkage=True)) == pytest.approx(
      expected, rel=1e-3)
  assert float(measures.h_score(f32, labels, 4)) > expected  # Shrinkage lowers it.


# -------------------------------------------------------------------- linear probe


def test_linear_probe_fits_separable_features_and_not_random_labels():
  rng = np.random.default_rng(4)
  centres = 4 * rng.normal(size=(3, 10))
  train_y, eval_y = np.arange(150) % 3, rng.integers(0, 3, 2000)
  train_x = (centres[train_y] + 0.3 * rng.normal(size=(150, 10))).astype(np.float32)
  eval_x = (centres[eval_y] + 0.3 * rng.normal(size=(2000, 10))).astype(np.float32)
  separable = measures.linear_probe(train_x, train_y, eval_x, eval_y, 3)
  assert separable == {'train_top1': 1.0, 'eval_top1': 1.0}
  # Random labels (the same shapes, so no second compilation): chance, 1/3, on eval.
  x = rng.normal(size=(2150, 10)).astype(np.float32)
  x[:, 9] = 2  # A constant unit: standardised to 0, not to 0/0.
  labels = rng.integers(0, 3, 2150)
  chance = measures.linear_probe(x[:150], labels[:150], x[150:], labels[150:], 3, l2=1e-2)
  assert abs(chance['eval_top1'] - 1 / 3) < 0.05
  assert chance['train_top1'] > 0.4  # It fitted the noise it saw.
  # Standardised, the probe does not see the units' scales and offsets (the L2
  # penalty would: unstandardised, 10-20 of these 2150 predictions change).
  scale = np.logspace(-2, 2, 10, dtype=np.float32)
  offset = rng.normal(size=10).astype(np.float32)
  x = x * scale + offset
  rescaled = measures.linear_probe(x[:150], labels[:150], x[150:], labels[150:], 3, l2=1e-2)
  assert rescaled == pytest.approx(chance, abs=2e-3)


# ----------------------------------------------------------------- rank agreement


def test_rank_agreement_by_hand_with_ties():
  # [1, 2, 3, 4] against [1, 3, 2, 4]: rank differences (0, 1, -1, 0), so Spearman's
  # rho = 1 - 6 * 2 / (4 * 15) = 0.8; of 6 pairs one is discordant: tau = 4/6.
  assert measures.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
  assert measures.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
  # [1, 2, 2, 3] against [10, 20, 30, 40]: average ranks (1, 2.5, 2.5, 4) and
  # (1, 2, 3, 4), centred (-1.5, 0, 0, 1.5) and (-1.5, -.5, .5, 1.5): rho =
  # 4.5 / sqrt(4.5 * 5) = sqrt(0.9). Five concordant pairs, none discordant, one
  # tied in a only: tau-b = 5 / sqrt((6 - 1) * 6) = 5 / sqrt(30).
  assert measures.spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(math.sqrt(0.9))
  assert measures.kendall_tau([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(5 / math.sqrt(30))
  assert measures.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1)


def test_layer_predictors_pad_every_layer_to_one_width_without_changing_them():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 120)
  train = {'narrow': np.maximum(rng.normal(size=(120, 6)) + labels[:, None], 0),
           'wide': rng.normal(size=(120, 40)) + labels[:, None] * 0.3}
  train = {k: v.astype(np.float32) for k, v in train.items()}
  out = transfer.predictors(train, labels, train, labels, 3, ('narrow', 'wide'), 200)
  for group, x in train.items():
    assert out[group]['logme'] == pytest.approx(float(measures.logme(x, labels, 3)), rel=1e-5)
    assert out[group]['h_score'] == pytest.approx(float(measures.h_score(x, labels, 3)),
                                                  rel=1e-4)
    probe = measures.linear_probe(x, labels, x, labels, 3, steps=200)
    assert out[group]['probe_train_top1'] == pytest.approx(probe['train_top1'], abs=1 / 120)


@pytest.mark.parametrize('shrinkage', [False, True])
def test_h_score_wider_than_the_examples_matches_the_d_by_d_formula(shrinkage):
  rng = np.random.default_rng(5)
  labels = np.arange(30) % 3
  x = (rng.normal(size=(30, 8)) @ rng.normal(size=(8, 200)) + labels[:, None]).astype(
      np.float32)  # d = 200 > n = 30: computed from the 30 x 30 Gram matrix.
  f = (x - x.mean(0)).astype(np.float64)
  means = np.stack([f[labels == c].mean(0) for c in range(3)])
  cov_means, cov = means.T @ means * 10 / 30, f.T @ f / 30
  if shrinkage:
    a = float(measures.ledoit_wolf_shrinkage(f.astype(np.float32)))
    cov = (1 - a) * cov + a * np.trace(cov) / 200 * np.eye(200)
    cov_means = (1 - a) * cov_means
  expected = np.trace(np.linalg.pinv(cov, rcond=1e-6, hermitian=True) @ cov_means)  # Rank 9.
  got = float(measures.h_score(x, labels, 3, shrinkage=shrinkage))
  assert got == pytest.approx(expected, rel=2e-3)
