"""The MNIST classifier on mock TFDS MNIST (no network), and the Stacked-MNIST metric family."""

import math
import pathlib
from unittest import mock

from configs import stackmnist
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ddgan_jax import evaluation
from ddgan_jax.data import local
from ddgan_jax.data import tfds_sources
from ddgan_jax.evaluation import mnist_classifier
from ddgan_jax.evaluation import stacked_mnist

_MOCK_EXAMPLES = 64
# Trains in seconds on 64 mock digits; the real settings are MnistSettings().
TINY = mnist_classifier.MnistSettings(widths=(4, 8), features=16, epochs=2, batch_size=16)


@pytest.fixture(name='mock_mnist')
def fixture_mock_mnist(monkeypatch):
  monkeypatch.setattr(tfds_sources, '_check_can_prepare', lambda name, root, files: None)
  with tfds.testing.mock_data(num_examples=_MOCK_EXAMPLES):
    yield


def _config(tmp_path):
  config = stackmnist.get_config()
  config.eval.cache_dir = str(tmp_path / 'cache')
  return config


def test_trains_on_mock_mnist_and_restores_the_same_predictions(tmp_path, mock_mnist):
  config = _config(tmp_path)
  trained = mnist_classifier.load_or_train(TINY, config)
  assert not trained.classifier.from_cache
  assert trained.directory.name == TINY.directory_name()
  assert trained.directory == mnist_classifier.directory(TINY, config.eval.cache_dir)
  images, labels = mnist_classifier.load_mnist(config, 'test')
  assert images.shape == (_MOCK_EXAMPLES, 28, 28, 1) and labels.dtype == np.int32
  assert trained.test_accuracy == trained.classifier.accuracy(images, labels)
  restored = mnist_classifier.load_or_train(TINY, config)
  assert restored.classifier.from_cache and restored.test_accuracy == trained.test_accuracy
  np.testing.assert_array_equal(restored.classifier.predict(images)[0],
                                trained.classifier.predict(images)[0])
  assert TINY.directory_name() != mnist_classifier.MnistSettings(
      widths=(4, 8), features=16, epochs=3, batch_size=16).directory_name()
  for path in pathlib.Path(trained.directory).rglob('*'):
    if path.is_file():
      path.write_bytes(b'unreadable')
  with mock.patch.object(mnist_classifier.logging, 'warning') as warning:
    retrained = mnist_classifier.load_or_train(TINY, config)
  assert not retrained.classifier.from_cache
  assert 'unreadable' in warning.call_args_list[0][0][0]
  assert mnist_classifier.load_or_train(TINY, config).classifier.from_cache


def test_offline_without_mnist_fails_at_once_with_instructions(tmp_path, monkeypatch):
  config = _config(tmp_path)
  config.data.data_dir = str(tmp_path / 'no_such_dir')
  config.data.download = False
  with pytest.raises(FileNotFoundError, match='tfds build mnist'):
    mnist_classifier.load_or_train(TINY, config)
  with pytest.raises(FileNotFoundError, match='tfds build mnist'):
    evaluation.evaluate(config, str(tmp_path / 'workdir'))  # Before looking for a checkpoint.

  def unreachable(address, timeout):
    raise OSError(f'{address} unreachable within {timeout} s')

  monkeypatch.setattr(tfds_sources.socket, 'create_connection', unreachable)
  config.data.download = True
  with pytest.raises(ConnectionError, match='storage.googleapis.com.*tfds build mnist'):
    stacked_mnist.check_config(config)


def test_offline_mnist_prepares_from_the_original_files_in_the_manual_folder(tmp_path, monkeypatch):
  config = _config(tmp_path)
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.download = False
  with pytest.raises(FileNotFoundError) as missing:
    mnist_classifier.load_or_train(TINY, config)
  manual = tmp_path / 'tfds' / 'downloads' / 'manual'
  names = ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 'train-images-idx3-ubyte.gz',
           'train-labels-idx1-ubyte.gz']
  assert f'Offline, copy the original files ({", ".join(names)}) into {manual}/' in str(
      missing.value)

  def unreachable(address, timeout):
    raise AssertionError(f'{address} contacted although the files are in the manual folder')

  monkeypatch.setattr(tfds_sources.socket, 'create_connection', unreachable)
  manual.mkdir(parents=True)
  for name in names:
    (manual / name).write_bytes(b'not MNIST')
  config.data.download = True
  with pytest.raises(RuntimeError, match=r'(?s)checksum.*train-images-idx3-ubyte.gz'):
    mnist_classifier.load_or_train(TINY, config)


class _BrightnessClassifier:
  """Stands in for the CNN: the class of a 28 x 28 digit is its pixel sum // 7, modulo 10."""

  def predict(self, images):
    assert images.shape[1:] == (28, 28, 1) and images.dtype == np.uint8
    classes = images.astype(np.int64).sum(axis=(1, 2, 3)) // 7 % 10
    probs = np.full((len(images), 10), 0.05 / 9)
    probs[np.arange(len(images)), classes] = 0.95
    return probs, np.zeros((len(images), 1))


def test_stacked_mnist_scores_cropped_samples_like_the_digits_they_hold(tmp_path, mock_mnist,
                                                                       monkeypatch):
  trained = mnist_classifier.MnistClassifier(_BrightnessClassifier(), 0.5, tmp_path / 'classifier')
  monkeypatch.setattr(mnist_classifier, 'load_or_train', lambda settings, config: trained)
  config = _config(tmp_path)
  assert evaluation.family_for('stackmnist') is stacked_mnist
  stacked_mnist.check_config(config)
  # Padded stacks of the very test digits, drawn as the family draws its real reference.
  digits, labels = mnist_classifier.load_mnist(config, 'test')
  n = 100
  reference = local.stack_three(digits[..., 0], labels, permutations=math.ceil(n / len(labels)),
                                seed=config.seed, num_examples=n, image_size=28)
  stacks = reference.load(np.arange(n))[0]
  metrics = stacked_mnist.score(config, np.pad(stacks, ((0, 0), (2, 2), (2, 2), (0, 0))),
                                tmp_path, 0)
  assert metrics['samples'] == metrics['real'] and metrics['real']['modes_covered'] > 50
  assert metrics['samples']['num_samples'] == n and metrics['num_timesteps'] == 4
  assert metrics['classifier']['test_accuracy'] == 0.5
  assert '/1000 modes covered' in stacked_mnist.summary(metrics)
  shifted = stacked_mnist.score(config, np.pad(stacks, ((0, 0), (1, 3), (2, 2), (0, 0))),
                                tmp_path, 0)
  assert shifted['samples']['mode_counts'] != metrics['real']['mode_counts']
  config.model.image_size = 28
  with pytest.raises(ValueError, match='32 x 32 x 3'):
    stacked_mnist.check_config(config)
