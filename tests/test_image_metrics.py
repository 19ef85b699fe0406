"""The image metric family: FID, IS and precision/recall of samples against a cached reference."""

import os

from etils import epath
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from configs import default
from ddgan_jax import evaluation
from ddgan_jax import fid
from ddgan_jax import sampling
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import image_metrics
from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_metrics
from ddgan_jax.evaluation import inception_weights
from tests import inception_fixture
from tests.tolerances import assert_trees_close


@pytest.fixture(name='weights', scope='module')
def fixture_weights(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('inception') / 'random_inception.npz')
  inception_weights.save(
      inception_weights.from_torch_state_dict(inception_fixture.random_state_dict()), path)
  return path


def _config(tmp_path, weights, images):
  config = default.get_config()
  config.data.dataset = 'npz'
  config.data.path = str(tmp_path / 'train.npz')
  np.savez(config.data.path, images=images)
  config.model.image_size, config.model.num_channels = images.shape[1], images.shape[-1]
  config.eval.cache_dir = str(tmp_path / 'cache')
  config.eval.inception_weights = weights
  config.eval.inception_batch_size = 8
  return config


def _train_images():
  """Ten distinct uint8 16 x 16 RGB images."""
  base = inception_fixture.fixture_images()['images32'][:, :16, :16]
  return np.concatenate([base, base[:, ::-1], base[:, :, ::-1], 255 - base,
                         np.roll(base, 5, axis=1)])


def test_reference_statistics_come_from_the_pipeline_and_are_cached(tmp_path, weights):
  train = _train_images()
  config = _config(tmp_path, weights, train)
  assert evaluation.family_for('npz') is image_metrics
  image_metrics.check_config(config)
  features_fn = inception.make_features_fn(inception_weights.load(weights), sampling.make_mesh(),
                                           batch_size=8)
  weights_path = epath.Path(weights)
  reference, path = image_metrics.reference_statistics(config, features_fn, weights_path)
  assert os.listdir(config.eval.cache_dir) == [os.path.basename(path)]
  assert os.path.basename(path).startswith('fid_ref_npz-')
  assert '_train_16x16x3_n10_float32_inception-' in path
  features = features_fn(train)[0]
  np.testing.assert_array_equal(reference['features'], features)
  assert_trees_close((reference['mu'], reference['sigma']),
                     inception_metrics.feature_statistics(features), 1e-12, 'mu, sigma')

  def no_features(images):
    raise AssertionError('the cached reference should have been read')

  cached, cached_path = image_metrics.reference_statistics(config, no_features, weights_path)
  assert cached_path == path
  np.testing.assert_array_equal(cached['sigma'], reference['sigma'])

  # A given statistics file replaces the reference; it holds no features.
  stats = str(tmp_path / 'stats.npz')
  mu, sigma = inception_metrics.feature_statistics(
      np.random.default_rng(1).standard_normal((20, 2048)))
  fid.write_statistics(stats, mu, sigma)
  config.eval.fid_reference = stats
  given, given_path = image_metrics.reference_statistics(config, no_features, weights_path)
  assert given_path == stats and given['features'] is None
  np.testing.assert_array_equal(given['sigma'], sigma)


@pytest.mark.slow  # Two scipy square roots of 2048 x 2048 matrices: minutes on 2 shared cores.
def test_samples_equal_to_the_training_set_score_fid_zero_and_full_precision_recall(
    tmp_path, weights):
  train = _train_images()
  config = _config(tmp_path, weights, train)
  metrics = image_metrics.score(config, train, tmp_path, 0)
  _, sigma = fid.read_statistics(metrics['reference_statistics'])
  # 10 samples in 2048 dimensions: sqrtm of a singular product cancels to ~1e-6 of the trace.
  assert abs(metrics['fid']) < 1e-5 * np.trace(sigma)
  assert (metrics['precision'], metrics['recall']) == (1.0, 1.0)
  assert metrics['num_reference_features'] == 10
  assert metrics['inception_score']['splits'] == 10 and metrics['inception_score']['mean'] >= 1.0
  assert 'VGG-16' in metrics['recall_features']
  assert 'FID' in image_metrics.summary(metrics)
  noise = np.random.default_rng(0).integers(0, 256, train.shape, dtype=np.uint8)
  assert image_metrics.score(config, noise, tmp_path, 0)['fid'] > 1.0


def test_fid_during_training_agrees_on_one_and_eight_devices_and_jpeg_moves_it(
    tmp_path, weights, monkeypatch):
  train = _train_images()[:8]  # One forward pass of config.eval.inception_batch_size images.
  config = _config(tmp_path, weights, train)
  received = []

  def distance(mu1, sigma1, mu2, sigma2):
    # Records what FID is computed from; scipy's sqrtm in 2048 dimensions takes minutes here.
    received.append((mu1, sigma1, mu2, sigma2))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1))

  monkeypatch.setattr(inception_metrics, 'frechet_distance', distance)
  samples = train[:, ::-1, ::-1].astype(np.float32) / 127.5 - 1.0  # Floats in [-1, 1].
  png = common.to_scoring_range(config, samples)
  config.eval.image_format = 'jpeg'
  jpeg = common.to_scoring_range(config, samples)
  values = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), ('data',))
    name, metric = image_metrics.training_metric(config, mesh)
    values.append(metric(png))
  assert name == 'fid'
  assert os.listdir(config.eval.cache_dir)  # The reference: computed once, then read.
  # Each device convolves a batch of 1 instead of 8, which may round differently.
  assert_trees_close(received[1], received[0], 1e-5, 'statistics on 8 vs 1 devices')
  assert values[1] == pytest.approx(values[0], rel=1e-5)
  assert abs(metric(jpeg) - values[1]) > 1e-3 * values[1]

  # As evaluation holds them: one image per device, each encoded by the process holding it.
  split = jax.device_put(samples, NamedSharding(mesh, P('data')))
  for image_format, expected in (('jpeg', jpeg), ('png', png)):
    config.eval.image_format = image_format
    images = common.to_scoring_range(config, split)
    assert images.sharding == split.sharding
    np.testing.assert_array_equal(images, expected)
  assert metric(images) == values[1]


def test_streaming_datasets_need_a_reference_file_and_weights_must_exist(tmp_path, weights):
  config = _config(tmp_path, weights, np.zeros((2, 8, 8, 3), np.uint8))
  config.data.dataset = 'lsun_church'
  with pytest.raises(ValueError, match='fid_reference'):
    image_metrics.check_config(config)
  config.eval.fid_reference = str(tmp_path / 'absent.npz')
  with pytest.raises(FileNotFoundError, match='absent.npz'):
    image_metrics.check_config(config)
  config.data.dataset = 'npz'
  config.eval.fid_reference = ''
  config.eval.inception_weights = str(tmp_path / 'absent_weights.npz')
  with pytest.raises(inception_weights.WeightsNotFoundError, match='absent_weights'):
    image_metrics.check_config(config)
