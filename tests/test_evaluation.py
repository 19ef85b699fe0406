"""Tests of --mode=eval: digit metrics, the classifier cache, the shared path and the registry."""

import json
import math
import time
from unittest import mock

import jax
import numpy as np
from PIL import Image
import pytest

from ddgan_jax import compilation
from ddgan_jax import evaluation
from ddgan_jax import models
from ddgan_jax import run_config
from ddgan_jax import sampling
from ddgan_jax.evaluation import classifier as classifier_lib
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import digits
from tests.configs import tiny
from tests.configs import tiny_digits

SIZE = 16


@pytest.fixture(scope='module')
def cache_dir(digits_classifier_cache):
  return digits_classifier_cache


@pytest.fixture(scope='module')
def classifier(cache_dir):
  return classifier_lib.load_or_train(classifier_lib.ClassifierSettings(image_size=SIZE), cache_dir)


@pytest.fixture(scope='module')
def split():
  settings = classifier_lib.ClassifierSettings(image_size=SIZE)
  return classifier_lib.digits_split(SIZE, settings.heldout_fraction, settings.seed)


def test_split_is_stratified_disjoint_and_as_training_sees_it(split):
  assert split.heldout_images.shape == (360, SIZE, SIZE, 1)
  assert split.heldout_images.dtype == np.uint8 and split.train_images.shape[0] == 1437
  np.testing.assert_array_equal(np.bincount(split.heldout_labels) // 10, [3] * 10)
  train_rows = {im.tobytes() for im in split.train_images}
  assert sum(im.tobytes() in train_rows for im in split.heldout_images) < 5  # Exact duplicates.


def test_classifier_is_accurate_on_held_out_digits(classifier, split):
  assert classifier.accuracy(split.heldout_images, split.heldout_labels) >= 0.97


def test_score_separates_real_collapsed_and_noise(classifier, split):
  real = digits.digit_scores(split.heldout_images, split.train_images, classifier)
  zeros = split.heldout_images[split.heldout_labels == 0]
  collapsed = digits.digit_scores(np.resize(zeros, (360, SIZE, SIZE, 1)), split.heldout_images,
                                  classifier)
  rng = np.random.default_rng(0)
  noise = digits.digit_scores(rng.integers(0, 256, (360, SIZE, SIZE, 1), dtype=np.uint8),
                              split.heldout_images, classifier)
  assert real['confident_fraction'] >= 0.9
  assert real['reverse_kl'] < 0.01 and real['num_images'] == 360
  assert sum(real['class_histogram']) == pytest.approx(1.0)
  assert collapsed['reverse_kl'] >= math.log(10) - 0.05
  assert collapsed['class_histogram'][0] >= 0.99
  assert collapsed['frechet_distance'] > 10 * real['frechet_distance']
  assert noise['confident_fraction'] < 0.5
  assert noise['frechet_distance'] > 10 * real['frechet_distance']


def test_reverse_kl_closed_forms():
  assert digits.reverse_kl_to_uniform(np.full(10, 7)) == pytest.approx(0.0, abs=1e-12)
  assert digits.reverse_kl_to_uniform(np.eye(10)[4]) == pytest.approx(math.log(10), rel=1e-12)
  # Uniform over 2 of 10 classes: log(10 / 2).
  assert digits.reverse_kl_to_uniform([5, 5] + [0] * 8) == pytest.approx(math.log(5), rel=1e-12)


def test_frechet_distance_of_gaussians_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 6))
  cov = a @ a.T + np.eye(6)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  # For C2 = c C1: (C1 C2)^(1/2) = sqrt(c) C1, so the trace term is (1 - sqrt(c))^2 tr C1.
  expected = np.sum((mu1 - mu2) ** 2) + (1.0 - 2.0) ** 2 * np.trace(cov)
  assert digits.frechet_distance(mu1, cov, mu2, 4.0 * cov) == pytest.approx(expected, rel=1e-9)
  var1, var2 = rng.uniform(0.5, 2.0, size=(2, 6))
  expected = np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  assert digits.frechet_distance(mu1, np.diag(var1), mu1, np.diag(var2)) == pytest.approx(
      expected, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_and_of_singular_covariances():
  features = np.random.default_rng(1).normal(size=(500, 16))
  stats = digits.feature_statistics(features)
  assert digits.frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-8)
  singular = features.copy()
  singular[:, 8:] = 0.0  # Dead features, as ReLUs give: rank-deficient covariance.
  distance = digits.frechet_distance(*digits.feature_statistics(singular), *stats)
  assert np.isfinite(distance) and distance > 0
  with pytest.raises(ValueError, match='N >= 2'):
    digits.feature_statistics(features[:1])


def test_digits_metric_during_training_is_the_samples_frechet_distance(cache_dir, classifier,
                                                                       split):
  config = tiny_digits.get_config()
  config.model.image_size = SIZE
  config.eval.cache_dir = cache_dir
  name, metric = digits.training_metric(config, None)
  images = split.train_images[:100]
  assert name == 'frechet_distance'
  assert metric(images) == pytest.approx(
      digits.digit_scores(images, split.heldout_images, classifier)['frechet_distance'], rel=1e-9)


def test_classifier_cache_is_reused_and_a_corrupt_file_retrained(tmp_path):
  settings = classifier_lib.ClassifierSettings(image_size=8)
  first = classifier_lib.load_or_train(settings, str(tmp_path))
  (path,) = tmp_path.glob('digits_classifier_*.npz')
  assert not first.from_cache and path.name == settings.cache_name()
  second = classifier_lib.load_or_train(settings, str(tmp_path))
  assert second.from_cache
  images = np.zeros((3, 8, 8, 1), np.uint8)
  np.testing.assert_allclose(second.predict(images)[0], first.predict(images)[0], rtol=1e-6)
  path.write_bytes(b'not an npz file')
  with mock.patch.object(classifier_lib.logging, 'warning') as warning:
    third = classifier_lib.load_or_train(settings, str(tmp_path))
  assert not third.from_cache and 'unreadable' in warning.call_args[0][0]
  assert classifier_lib.load_or_train(settings, str(tmp_path)).from_cache
  assert settings.cache_name() != classifier_lib.ClassifierSettings(image_size=8,
                                                                    epochs=11).cache_name()


def test_eval_of_a_trained_digits_run_writes_all_fields(digits_run, cache_dir):
  config = run_config.load(str(digits_run))  # Trained to step 4 through the CLI (conftest.py).
  assert config.model.image_size == SIZE  # So that the module's cached classifier serves.
  config.eval.num_samples = 12
  config.eval.batch_size = 8
  config.eval.cache_dir = cache_dir
  metrics = evaluation.evaluate(config, str(digits_run))
  written = json.loads((digits_run / 'eval' / 'metrics_step4.json').read_text())
  assert written == metrics
  assert metrics['step'] == 4 and metrics['num_samples'] == 12 and metrics['dataset'] == 'digits'
  assert metrics['device_kind'] and metrics['dtype'] == 'float32'
  assert 'levels' not in metrics  # config.eval.per_level is off by default.
  for part in ('samples', 'real'):
    assert set(metrics[part]) == {'confident_fraction', 'class_histogram', 'reverse_kl',
                                  'frechet_distance', 'num_images'}
    assert len(metrics[part]['class_histogram']) == 10
  assert metrics['samples']['num_images'] == 12
  assert metrics['confident_ratio'] == pytest.approx(
      metrics['samples']['confident_fraction'] / metrics['real']['confident_fraction'])
  assert metrics['classifier']['heldout_accuracy'] >= 0.97
  assert list((digits_run / 'eval').glob('events.out.tfevents.*'))
  assert int(sampling.restore_state(config, str(digits_run), sampling.make_mesh(), 2).step) == 2
  with pytest.raises(FileNotFoundError, match='holds steps'):
    sampling.restore_state(config, str(digits_run), sampling.make_mesh(), 3)


def test_unsupported_dataset_names_the_supported_ones(tmp_path):
  config = tiny_digits.get_config()
  config.data.dataset = 'mnist'
  with pytest.raises(ValueError, match="supports 'toy2d', 'digits', 'stacked_digits', "
                                       "'stackmnist', 'cifar10'"):
    evaluation.evaluate(config, str(tmp_path))


def _images(channels):
  """Three float images (3, 16, 16, C) in [-1, 1]: a ramp plus noise."""
  ramp = np.linspace(-1, 1, 16)[None, None, :, None]
  noise = np.random.default_rng(channels).uniform(-0.3, 0.3, (3, 16, 16, channels))
  return np.clip(ramp + noise, -1, 1).astype(np.float32)


@pytest.mark.parametrize('channels', [3, 1])
def test_jpeg_format_scores_what_the_official_jpeg_files_held_and_png_is_lossless(
    tmp_path, channels):
  config = tiny_digits.get_config()
  samples = _images(channels)
  png = common.to_scoring_range(config, samples)
  np.testing.assert_array_equal(png, sampling.to_uint8(samples, centered=True))
  config.eval.image_format = 'jpeg'
  jpeg = common.to_scoring_range(config, samples)
  assert jpeg.shape == png.shape and jpeg.dtype == np.uint8
  assert np.abs(jpeg.astype(int) - png.astype(int)).mean() > 1.0
  for i, image in enumerate(png):
    # torchvision's save_image: grey to RGB, PIL's own choice of format and settings for a .jpg;
    # pytorch-fid reads it back as RGB.
    path = tmp_path / f'{i}.jpg'
    Image.fromarray(np.repeat(image, 3 // channels, axis=-1)).save(path)
    read = np.asarray(Image.open(path).convert('RGB'))
    np.testing.assert_array_equal(read[..., :channels], jpeg[i])
    np.testing.assert_array_equal(read, np.repeat(read[..., :1], 3, axis=-1) if channels == 1
                                  else read)


def test_unknown_image_format_fails_naming_the_choices(tmp_path):
  config = tiny_digits.get_config()
  config.eval.image_format = 'jpg'
  with pytest.raises(ValueError, match="image_format must be one of 'png', 'jpeg', got 'jpg'"):
    evaluation.evaluate(config, str(tmp_path))


def test_sampling_time_leaves_compilation_out():
  config = tiny.get_config()
  config.eval.batch_size = 16
  generator = models.build_generator(config)
  variables = jax.eval_shape(generator.init, jax.random.PRNGKey(0), np.zeros((1, 2), np.float32),
                             np.zeros(1, np.int32), np.zeros((1, config.model.nz), np.float32))
  variables = jax.tree.map(lambda a: np.full(a.shape, 0.1, a.dtype), variables)
  batch_fn = common.make_batch_fn(config, sampling.make_mesh())
  with compilation.CompileCounter() as counter:
    start = time.perf_counter()
    samples, three_batches = common.draw_samples(config, batch_fn, variables, 40)
    first_call = time.perf_counter() - start
    one, one_batch = common.draw_samples(config, batch_fn, variables, 10)
  assert counter.counts['jit(sample_batch)'] == 1, counter.counts
  assert samples.shape == (40, 2)
  np.testing.assert_array_equal(one, samples[:10])
  # Per batch of 16, both far below the first call, which compiled.
  for seconds_per_100 in (three_batches, one_batch):
    assert 0 < seconds_per_100 * 16 / 100 < first_call / 4
