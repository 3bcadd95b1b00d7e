"""The numbers that say what a layer holds: linear CKA between layers (biased, and
unbiased from minibatches), LogME and H-score of a layer's features for a task, a
linear probe's top-1, and the rank agreement of such scores with transfer results.

Features are float32 arrays [n, d]: n examples (the same examples, in the same
order, for every layer compared), d units of one layer, flattened.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from scipy import stats

# Full float32 matmuls: by default TPUs (bf16 passes) and Ampere+ GPUs (TF32)
# multiply float32 at lower precision, and the unbiased HSIC's terms cancel.
_dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _centre(x: jax.Array) -> jax.Array:
  return x - jnp.mean(x, axis=0, keepdims=True)


# ----------------------------------------------------------------------------- CKA


@jax.jit
def linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
  """Linear CKA of x [n, d1] and y [n, d2] (Kornblith et al. 2019, "Similarity of
  Neural Network Representations Revisited"):
  ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), Xc and Yc centred over the n
  examples; the biased HSIC of the linear kernels, normalised. A scalar in [0, 1],
  in feature space (d x d products, no n x n Gram matrix)."""
  x, y = _centre(x), _centre(y)
  cross = jnp.sum(_dot(y.T, x) ** 2)
  return cross / (jnp.linalg.norm(_dot(x.T, x)) * jnp.linalg.norm(_dot(y.T, y)))


@jax.jit
def cka_matrix(features: Sequence[jax.Array]) -> jax.Array:
  """Biased linear CKA [L, L] between every pair of L layers' features [n, d_l]
  (the same n examples): HSIC_0 of the centred Gram matrices Xc Xc^T, normalised."""
  grams = jnp.stack([_dot(f, f.T) for f in map(_centre, features)])  # [L, n, n]
  return cka_from_hsic(jnp.einsum('aij,bij->ab', grams, grams))


@jax.jit
def unbiased_hsic_matrix(features: Sequence[jax.Array]) -> jax.Array:
  """HSIC_1 [L, L] between the linear Gram matrices of every pair of L layers'
  features [n, d_l] of one minibatch (n >= 4): the unbiased estimator of Song et
  al. 2012 ("Feature Selection via Dependence Maximization"), K~ the Gram matrix
  with its diagonal zeroed,

    HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                    - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)).

  Sum these over minibatches and normalise with `cka_from_hsic` (Nguyen, Raghu and
  Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?"). HSIC_1 does
  not change when a feature's mean does, so each batch is centred first: float32
  then keeps the digits that ReLU's means would eat."""
  n = features[0].shape[0]
  if n < 4:
    raise ValueError(f'The unbiased HSIC needs minibatches of 4 or more examples, not {n}.')
  if any(f.shape[0] != n for f in features):
    raise ValueError(f'Layers of one minibatch have different numbers of examples: '
                     f'{[f.shape[0] for f in features]}.')
  off_diagonal = 1 - jnp.eye(n, dtype=features[0].dtype)
  grams = jnp.stack([_dot(f, f.T) * off_diagonal for f in map(_centre, features)])
  sums = jnp.sum(grams, axis=(1, 2))  # 1^T K~ 1, [L]
  rows = jnp.sum(grams, axis=2)  # K~ 1, [L, n]
  traces = jnp.einsum('aij,bij->ab', grams, grams)  # tr(K~ L~): Gram matrices are symmetric
  hsic = (traces + jnp.outer(sums, sums) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * _dot(rows, rows.T))
  return hsic / (n * (n - 3))


@jax.jit
def cka_from_hsic(hsic: jax.Array) -> jax.Array:
  """CKA [L, L] from HSIC [L, L] (one batch's, or a sum over batches):
  HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
  norms = jnp.sqrt(jnp.diag(hsic))
  return hsic / (norms[:, None] * norms[None, :])


def minibatch_cka(batches: Iterable[Sequence[jax.Array]]) -> jax.Array:
  """Unbiased linear CKA [L, L] from minibatches (Nguyen, Raghu and Kornblith 2021):
  sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) sum_i HSIC_1(L_i, L_i)).

  Each batch is a sequence of L arrays [n_b, d_l], the same n_b examples through L
  layers (one network's, or two networks' side by side: the off-diagonal block is
  then the cross-network CKA). The running sum of `unbiased_hsic_matrix` is the
  whole state, so a caller that streams batches can keep that sum itself."""
  total = None
  for features in batches:
    hsic = unbiased_hsic_matrix(tuple(features))
    total = hsic if total is None else total + hsic
  if total is None:
    raise ValueError('minibatch_cka needs at least one minibatch.')
  return cka_from_hsic(total)


# --------------------------------------------------------------------------- LogME


def _logme_fit(sigma, z, outside, kappa):
  """gamma, m^T m and ||F m - y||^2 at kappa = beta/alpha, in F's singular basis
  (sigma_i = s_i^2, z = U^T y): m = beta A^-1 F^T y has components kappa s_i z_i /
  (1 + kappa sigma_i), and F m - y has z_i / (1 + kappa sigma_i) on U plus the part
  of y outside U. kappa = 0 (alpha = inf) is the model with no features."""
  shrink = kappa * sigma / (1 + kappa * sigma)  # How much of z_i the mean fits.
  gamma = jnp.sum(shrink)
  m_squared = jnp.sum(kappa**2 * sigma * z**2 / (1 + kappa * sigma) ** 2)
  residual = outside + jnp.sum(((1 - shrink) * z) ** 2)
  return gamma, m_squared, residual


def _logme_evidence(sigma, z, outside, alpha, beta, n):
  """The log evidence at (alpha, beta), m the posterior mean there: with kappa =
  beta/alpha, d/2 log alpha - 1/2 log|A| = -1/2 sum_i log(1 + kappa sigma_i) (the
  d - k zero eigenvalues of F^T F leave alpha alone) and beta ||F m - y||^2 + alpha
  m^T m = beta (||y - U z||^2 + sum_i z_i^2 / (1 + kappa sigma_i)): finite at alpha
  = inf too."""
  kappa = beta / alpha
  fitted = outside + jnp.sum(z**2 / (1 + kappa * sigma))
  return (n / 2 * jnp.log(beta) - n / 2 * math.log(2 * math.pi) - beta / 2 * fitted
          - jnp.sum(jnp.log1p(kappa * sigma)) / 2)


def _logme_class(sigma, z, outside, n, tolerance, max_iterations):
  """The maximised log evidence of one class's one-hot target (You et al. 2021,
  Algorithm 1): alpha, beta from 1, 1 by MacKay's fixed point until beta/alpha moves
  by less than `tolerance` (relative). Where no alpha explains y better than noise
  does, alpha grows geometrically: it stops once the features' share of the fit,
  beta/alpha sigma_max, is below float32's resolution (or alpha is inf)."""

  def step(state):
    alpha, beta, i, _ = state
    gamma, m_squared, residual = _logme_fit(sigma, z, outside, beta / alpha)
    new_alpha = jnp.where(m_squared > 0, gamma / m_squared, jnp.inf)
    new_beta = (n - gamma) / residual
    change = jnp.abs(new_beta / new_alpha - beta / alpha) / (beta / alpha)
    return new_alpha, new_beta, i + 1, change

  def going(state):
    alpha, beta, i, change = state
    features_matter = beta / alpha * jnp.max(sigma) > 1e-7
    return (i < max_iterations) & (change > tolerance) & features_matter

  one = jnp.ones((), sigma.dtype)
  alpha, beta, _, _ = jax.lax.while_loop(going, step, (one, one, 0, jnp.inf * one))
  return _logme_evidence(sigma, z, outside, alpha, beta, n)


@functools.partial(jax.jit, static_argnames=('num_classes', 'max_iterations'))
def logme(features: jax.Array, labels: jax.Array, num_classes: int, *,
          tolerance: float = 1e-5, max_iterations: int = 100) -> jax.Array:
  """LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning") of features F [n, d] for integer labels [n]: for each
  class's one-hot target y, the Bayesian linear model y ~ N(F w, 1/beta), w ~ N(0,
  1/alpha), evidence maximised over alpha and beta; the log evidence over n,

    n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2
    - alpha/2 m^T m - 1/2 log|A|,  A = alpha I + beta F^T F, m = beta A^-1 F^T y,

  averaged over the classes. One SVD of F serves every class and iteration. Every
  class must occur in labels (an absent one has no noise to fit: infinite evidence).
  Scalar, higher is better; features are used as given (no centring, no bias)."""
  n, _ = features.shape
  u, s, _ = jnp.linalg.svd(features, full_matrices=False)  # k = min(n, d) values
  targets = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)  # [n, C]
  z = _dot(u.T, targets)  # [k, C]: the targets in F's left singular basis
  outside = jnp.sum((targets - _dot(u, z)) ** 2, axis=0)  # [C]: no m reaches this part
  evidence = jax.vmap(
      lambda z_c, outside_c: _logme_class(s**2, z_c, outside_c, n, tolerance,
                                          max_iterations),
      in_axes=(1, 0))(z, outside)
  return jnp.mean(evidence) / n


# ------------------------------------------------------------------------- H-score


@functools.partial(jax.jit, static_argnames=('units',))
def ledoit_wolf_shrinkage(x: jax.Array, units: int | None = None) -> jax.Array:
  """The Ledoit and Wolf (2004) shrinkage in [0, 1] of the empirical covariance of
  centred x [n, d] towards tr(cov)/d I; sklearn.covariance.ledoit_wolf_shrinkage's
  formula (0 for d = 1). units: d, where x holds another matrix's principal
  coordinates (`_principal`): the formula's sums are the same in them."""
  n, d = x.shape
  d = units or d
  squares = x**2
  variances = jnp.sum(squares, axis=0) / n
  mu = jnp.sum(variances) / d
  delta_ = jnp.sum(_dot(x.T, x) ** 2) / n**2  # sum of the squared covariances
  beta_ = jnp.sum(jnp.sum(squares, axis=1) ** 2)  # sum of <X2^T, X2>, in O(n d)
  beta = (beta_ / n - delta_) / (d * n)
  delta = (delta_ - 2 * mu * jnp.sum(variances) + d * mu**2) / d
  beta = jnp.minimum(beta, delta)
  return jnp.where(beta > 0, beta / jnp.where(delta > 0, delta, 1), 0)


def _principal(f: jax.Array) -> jax.Array:
  """Centred f [n, d] in its principal coordinates, [n, n] (f = U S V^T -> U S):
  the same inner products between examples, its covariance's nonzero
  eigenvalues, and from the n x n Gram matrix, not the d x d covariance."""
  eigenvalues, u = jnp.linalg.eigh(_dot(f, f.T))
  return u * jnp.sqrt(jnp.maximum(eigenvalues, 0))


@functools.partial(jax.jit, static_argnames=('num_classes', 'shrinkage'))
def h_score(features: jax.Array, labels: jax.Array, num_classes: int, *,
            shrinkage: bool = False) -> jax.Array:
  """H-score (Bao et al. 2019, "An Information-Theoretic Approach to Transferability
  in Task Transfer Learning") of features f [n, d] for integer labels [n]:
  tr(cov(f)^+ cov(E[f | y])), the pseudo-inverse for singular covariances (its
  default cut-off, 10 d eps of the largest eigenvalue). Scalar in [0, min(d, C-1)],
  higher is better; unchanged by any invertible linear map of the features.

  shrinkage: the regularised H-score of Ibrahim, Ponomareva and Mazumder 2022
  ("Newer is not always better: Rethinking transferability metrics"), tr(cov_a(f)^-1 (1 - a)
  cov(E[f | y])), cov_a the Ledoit-Wolf estimate with shrinkage a. Both covariances
  here divide by n; their published code divides cov(E[f | y]) by n - 1, a factor
  n / (n - 1) higher.

  Wider than n, f is taken in its principal coordinates (n x n matrices, not d
  x d): both scores are the same there (cov(E[f | y]) lies in f's row space,
  which the shrunk cov_a maps to itself), so memory and time grow with n."""
  n, d = features.shape
  f = _centre(features)
  if d > n:
    f = _principal(f)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=f.dtype)
  counts = jnp.sum(onehot, axis=0)  # [C]
  means = _dot(onehot.T, f) / jnp.maximum(counts, 1)[:, None]  # [C, d], centred class means
  # E[f | y] per example is its class's mean, and these average to f's mean, 0.
  cov_means = _dot(means.T * counts, means) / n
  cov = _dot(f.T, f) / n
  if shrinkage:
    a = ledoit_wolf_shrinkage(f, units=d)
    cov = (1 - a) * cov + a * jnp.trace(cov) / d * jnp.eye(f.shape[1], dtype=f.dtype)
    cov_means = (1 - a) * cov_means
  return jnp.trace(_dot(jnp.linalg.pinv(cov, hermitian=True), cov_means))


# -------------------------------------------------------------------- linear probe


@functools.partial(jax.jit, static_argnames=('num_classes', 'steps'))
def _fit_softmax(x, labels, num_classes, steps, l2):
  """Weights [d, C] and bias [C] of softmax regression on x [n, d]: mean cross-entropy
  plus l2/2 ||W||^2, by full-batch L-BFGS (zoom line search) for at most `steps`
  steps, or until the gradient's norm is below 1e-6."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)

  def loss(params):
    logits = _dot(x, params['w']) + params['b']
    return (jnp.mean(optax.softmax_cross_entropy(logits, targets))
            + l2 / 2 * jnp.sum(params['w'] ** 2))

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=loss)
    return optax.apply_updates(params, updates), state

  def going(carry):
    _, state = carry
    count = otu.tree_get(state, 'count')
    return (count == 0) | ((count < steps) & (otu.tree_norm(otu.tree_get(state, 'grad'))
                                              >= 1e-6))

  params = {'w': jnp.zeros((x.shape[1], num_classes), x.dtype),
            'b': jnp.zeros((num_classes,), x.dtype)}
  params, _ = jax.lax.while_loop(going, step, (params, solver.init(params)))
  return params


@jax.jit
def _standardise(train_x, eval_x):
  """Both sets' units scaled to the train set's mean 0 and std 1 (constant ones to 0)."""
  mean = jnp.mean(train_x, axis=0)
  std = jnp.std(train_x, axis=0)
  std = jnp.where(std > 0, std, 1)
  return (train_x - mean) / std, (eval_x - mean) / std


@jax.jit
def _top1(params, x, labels):
  return jnp.mean(jnp.argmax(_dot(x, params['w']) + params['b'], axis=-1) == labels)


def linear_probe(train_x: jax.Array, train_y: jax.Array, eval_x: jax.Array,
                 eval_y: jax.Array, num_classes: int, *, steps: int = 300,
                 l2: float = 1e-4) -> dict[str, float]:
  """A linear probe of one layer: softmax regression fitted on train_x [n, d] and
  integer train_y [n] (features standardised with the train set's mean and std; a
  constant unit is left at 0), scored on eval_x [m, d], eval_y [m].
  Returns {'train_top1', 'eval_top1'}, fractions in [0, 1]."""
  train_x, eval_x = _standardise(train_x, eval_x)
  params = _fit_softmax(train_x, train_y, num_classes, steps, l2)
  return {'train_top1': float(_top1(params, train_x, train_y)),
          'eval_top1': float(_top1(params, eval_x, eval_y))}


# ----------------------------------------------------------------- rank agreement


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
  """Spearman's rho of two equally long sequences: Pearson's r of their ranks, ties
  given their average rank (scipy.stats.spearmanr). NaN if either is constant."""
  return float(stats.spearmanr(a, b).statistic)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
  """Kendall's tau-b of two equally long sequences: (concordant - discordant) /
  sqrt((pairs - ties in a) (pairs - ties in b)) (scipy.stats.kendalltau)."""
  return float(stats.kendalltau(a, b).statistic)
