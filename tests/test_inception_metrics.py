"""Fréchet distance, Inception Score and precision/recall against answers known in closed form."""

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from ddgan_jax.evaluation import inception_metrics as metrics


def _rotation(dim, seed):
  return special_ortho_group.rvs(dim, random_state=seed)


def test_frechet_distance_matches_closed_form_for_commuting_covariances():
  # With sigma_i = Q diag(a_i) Q^T: FD = |mu1 - mu2|^2 + sum_k (sqrt(a1_k) - sqrt(a2_k))^2.
  rng = np.random.default_rng(0)
  q = _rotation(12, 0)
  a1, a2 = rng.uniform(0.1, 3.0, 12), rng.uniform(0.1, 3.0, 12)
  mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a1) - np.sqrt(a2)) ** 2)
  fd = metrics.frechet_distance(mu1, q @ np.diag(a1) @ q.T, mu2, q @ np.diag(a2) @ q.T)
  assert fd == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_closed_form_in_one_dimension():
  # N(0, 4) vs N(3, 1): 3^2 + (2 - 1)^2 = 10.
  assert metrics.frechet_distance(np.zeros(1), np.full((1, 1), 4.0), np.full(1, 3.0),
                                  np.ones((1, 1))) == pytest.approx(10.0, rel=1e-12)


def test_frechet_distance_of_a_set_to_itself_is_zero_with_fewer_samples_than_dimensions():
  features = np.random.default_rng(1).standard_normal((100, 256)).astype(np.float32)
  mu, sigma = metrics.feature_statistics(features)
  assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_frechet_distance_is_finite_and_stable_with_fewer_samples_than_dimensions():
  # 100 samples in 512 dimensions: both covariances are singular, as with < 2048 images.
  rng = np.random.default_rng(2)
  mixing = rng.standard_normal((512, 512)) / np.sqrt(512)
  a = rng.standard_normal((100, 512)) @ mixing
  b = rng.standard_normal((100, 512)) @ mixing + 0.1
  stats_a, stats_b = metrics.feature_statistics(a), metrics.feature_statistics(b)
  fd = metrics.frechet_distance(*stats_a, *stats_b)
  assert np.isfinite(fd) and fd > 0
  nudged = metrics.feature_statistics(b + 1e-6 * rng.standard_normal(b.shape))
  assert metrics.frechet_distance(*stats_a, *nudged) == pytest.approx(fd, rel=1e-4)


def test_frechet_distance_rejects_mismatched_statistics():
  with pytest.raises(ValueError, match='different sizes'):
    metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_on_logits_with_known_answers():
  # Ten classes, each split holds every class once with certainty: IS = 10 exactly.
  certain = 50.0 * np.tile(np.eye(10), (10, 1))
  mean, std = metrics.inception_score(certain, splits=10)
  assert mean == pytest.approx(10.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
  # Identical predictions: p(y|x) = p(y), so IS = 1.
  assert metrics.inception_score(np.ones((40, 7)), splits=10)[0] == pytest.approx(1.0, rel=1e-12)
  # Half the images say [p, 1 - p], half [1 - p, p]: IS = exp(log 2 + p log p + (1-p) log(1-p)).
  p = 0.8
  logits = np.log(np.array([[p, 1 - p], [1 - p, p]] * 20))
  expected = np.exp(np.log(2) + p * np.log(p) + (1 - p) * np.log(1 - p))
  assert metrics.inception_score(logits, splits=10)[0] == pytest.approx(expected, rel=1e-9)


def test_inception_score_std_is_over_splits():
  # Split 0 is certain over 2 classes (IS 2), split 1 identical predictions (IS 1).
  logits = np.concatenate([50.0 * np.eye(2), np.zeros((2, 2))])
  assert metrics.inception_score(logits, splits=2) == pytest.approx((1.5, 0.5), rel=1e-9)
  with pytest.raises(ValueError, match='splits'):
    metrics.inception_score(np.zeros((5, 3)), splits=10)


def test_precision_recall_on_point_clouds_with_known_overlap():
  # Real: 0..99 on a line, fake: 50.5..149.5, rotated into 8-D. Radii (k = 3) are 2, and 3 at both
  # ends, so the real manifold is [-3, 102] and holds fake 50.5..101.5 (52 of 100), and the fake
  # one is [47.5, 152.5] and holds real 48..99 (52 of 100).
  line = np.zeros((100, 8))
  line[:, 0] = np.arange(100)
  shift = np.zeros(8)
  shift[0] = 50.5
  q = _rotation(8, 3)
  real, fake = line @ q.T, (line + shift) @ q.T
  assert metrics.precision_recall(real, fake, k=3, block=32) == pytest.approx((0.52, 0.52))
  assert metrics.precision_recall(real, real, k=3) == (1.0, 1.0)
  assert metrics.precision_recall(real, fake + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_needs_more_points_than_k():
  with pytest.raises(ValueError, match='more than 3'):
    metrics.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
