"""FID, Inception Score and improved precision/recall from Inception features, in float64.

* ``frechet_distance`` is pytorch-fid's ``calculate_frechet_distance``: scipy's ``sqrtm`` of
  sigma1 sigma2, with eps added to both diagonals when that square root is not finite, and the
  real part kept when the imaginary one is negligible on the diagonal.
* ``inception_score`` is exp(E_x KL(p(y|x) || p(y))) over 10 consecutive splits of the 1008-way
  softmax, reported as the mean and standard deviation over splits (Salimans et al., 2016).
* ``precision_recall`` is the k-nearest-neighbour estimate of Kynkäänniemi et al. (2019) with
  k = 3: a sample is inside a set's manifold when it lies within the distance from some member of
  that set to the member's k-th nearest neighbour in the set. The DDGAN paper's recall used VGG-16
  features; this one runs on whatever features it is given (here Inception pool3).
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special

FID_EPS = 1e-6
_MAX_DIAGONAL_IMAGINARY = 1e-3


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """pytorch-fid's ``mu`` (D,) and ``sigma`` (D, D), float64, of features (N, D) with N >= 2."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'Statistics need features (N, D) with N >= 2, got shape {features.shape}.')
  return np.mean(features, axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = FID_EPS) -> float:
  """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)) as pytorch-fid computes it.

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) covariances.
    eps: added to both diagonals when the square root of the product is not finite.

  Returns:
    The distance as a float (float64 arithmetic throughout).

  Raises:
    ValueError: on mismatched shapes, or when the square root has a diagonal imaginary part above
      1e-3 (the covariances are not valid).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'Statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, sigma '
                     f'{sigma1.shape} vs {sigma2.shape}.')
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(mu1)) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=_MAX_DIAGONAL_IMAGINARY):
      raise ValueError(f'The square root of sigma1 sigma2 has an imaginary part of up to '
                       f'{np.max(np.abs(covmean.imag)):.3g}; are these valid covariances?')
    covmean = covmean.real
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """Mean and standard deviation over ``splits`` of exp(E KL(p(y|x) || p(y))).

  Args:
    logits: (N, K) classifier logits (the Inception's 1008), N >= splits.
    splits: the number of consecutive, near-equal parts the images are split into.

  Returns:
    (mean, std) over the splits; std is the population standard deviation, as in the original.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or len(logits) < splits or splits < 1:
    raise ValueError(f'The Inception Score needs logits (N, K) with N >= splits = {splits}, got '
                     f'shape {logits.shape}.')
  log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
  scores = []
  for i in range(splits):
    part = log_p[i * len(log_p) // splits:(i + 1) * len(log_p) // splits]
    log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
    kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores))


@jax.jit
def _block_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Euclidean distances (len(a), len(b)) between rows, in float32 at full matmul precision."""
  dot = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  squared = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * dot
  return jnp.sqrt(jnp.maximum(squared, 0.0))


def _distances(a: np.ndarray, b: np.ndarray, block: int):
  """Yields (start, distances (rows, len(b))) for consecutive row blocks of a."""
  b = jnp.asarray(b, jnp.float32)
  for start in range(0, len(a), block):
    yield start, np.asarray(_block_distances(jnp.asarray(a[start:start + block], jnp.float32), b))


def _radii(features: np.ndarray, k: int, block: int) -> np.ndarray:
  """Distance from each row to its k-th nearest other row."""
  radii = np.empty(len(features), np.float32)
  for start, d in _distances(features, features, block):
    radii[start:start + len(d)] = np.partition(d, k, axis=1)[:, k]  # Entry 0 is the point itself.
  return radii


def _coverage(queries: np.ndarray, manifold: np.ndarray, radii: np.ndarray, block: int) -> float:
  """The fraction of queries within radii[j] of some manifold[j]."""
  inside = 0
  for _, d in _distances(queries, manifold, block):
    inside += int(np.sum(np.any(d <= radii[None, :], axis=1)))
  return inside / len(queries)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     block: int = 1000) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al., 2019) of fake against real features.

  Args:
    real: (N, D) features of real images, N > k.
    fake: (M, D) features of generated images, M > k.
    k: the neighbour whose distance sets each point's radius.
    block: rows of distances computed at once (memory ~ block x max(N, M) floats).

  Returns:
    (precision: the fraction of fake inside the real manifold,
     recall: the fraction of real inside the fake manifold).
  """
  real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f'Expected features (N, D) and (M, D), got {real.shape} and {fake.shape}.')
  if min(len(real), len(fake)) <= k:
    raise ValueError(f'Precision and recall with k = {k} need more than {k} real and fake '
                     f'features, got {len(real)} and {len(fake)}.')
  precision = _coverage(fake, real, _radii(real, k, block), block)
  recall = _coverage(real, fake, _radii(fake, k, block), block)
  return precision, recall
