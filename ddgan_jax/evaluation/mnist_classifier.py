r"""The MNIST classifier of the Stacked-MNIST metrics: a small CNN trained on TFDS MNIST, cached.

  python -m ddgan_jax.evaluation.mnist_classifier [--cache_dir=~/.cache/ddgan_jax] \
      [--data_dir=DIR] [--download=false]

trains it on the 60,000 MNIST training digits (or loads it, once cached) and prints its accuracy
on the 10,000 test digits and its directory. ``--mode=eval`` on configs/stackmnist.py does the
same on first use, with the run's config.data (data_dir, download) and config.eval.cache_dir.

The network is ``classifier.DigitCNN`` on 28 x 28 digits, trained by ``classifier.fit``: the same
``MnistSettings`` always give the same parameters. They are saved with Orbax in
``<cache_dir>/mnist_classifier_<hash of the settings>``, with the test accuracy in the
checkpoint's custom metadata. An unreadable checkpoint is retrained with a warning. Where MNIST is
not prepared and cannot be downloaded, it fails at once with the command that prepares it
(``tfds_sources.prepared_builder``).
"""

import dataclasses
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ddgan_jax.data import tfds_sources
from ddgan_jax.evaluation import classifier as classifier_lib

FLAGS = flags.FLAGS
MIN_TEST_ACCURACY = 0.99
# Version of the training code; bump it when the training changes without a settings change.
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MnistSettings(classifier_lib.CNNSettings):
  """Everything the MNIST classifier depends on; its hash names the checkpoint directory."""

  image_size: int = 28
  widths: tuple[int, int] = (32, 64)
  epochs: int = 10
  batch_size: int = 128
  max_shift: int = 2

  def directory_name(self) -> str:
    return f'mnist_classifier_{self.digest(_VERSION)}'


@dataclasses.dataclass(frozen=True)
class MnistClassifier:
  """A trained MNIST classifier.

  Attributes:
    classifier: the network and its parameters; ``classifier.predict`` takes uint8 digits
      (N, 28, 28, 1).
    test_accuracy: its accuracy on the MNIST test split.
    directory: its Orbax checkpoint.
  """

  classifier: classifier_lib.DigitClassifier
  test_accuracy: float
  directory: epath.Path


def directory(settings: MnistSettings, cache_dir: str) -> epath.Path:
  """Where the classifier of ``settings`` is saved under ``cache_dir`` ('~' expanded)."""
  return epath.Path(cache_dir).expanduser() / settings.directory_name()


def load_mnist(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 MNIST digits (N, 28, 28, 1) and int32 labels (N,) of 'train' or 'test'.

  Args:
    config: reads config.data.data_dir and config.data.download (see ``prepared_builder``).
    split: the TFDS split.
  """
  images, labels = tfds_sources.load_split('mnist', config, split)
  return images, labels.astype(np.int32)


def _restore(path: epath.Path, settings: MnistSettings) -> MnistClassifier:
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(path, classifier_lib.abstract_params(settings))
    metadata = checkpointer.metadata(path).custom_metadata
  return MnistClassifier(classifier_lib.DigitClassifier(settings, params, from_cache=True),
                         float(metadata['test_accuracy']), path)


def load_or_train(settings: MnistSettings, config: ml_collections.ConfigDict) -> MnistClassifier:
  """The classifier of ``settings``: restored from config.eval.cache_dir, or trained and saved.

  Args:
    settings: the classifier's training settings.
    config: reads eval.cache_dir, and data.data_dir and data.download to read MNIST when the
      classifier is not cached.

  Returns:
    The classifier; its ``classifier.from_cache`` says whether it was restored.

  Raises:
    FileNotFoundError, ConnectionError, RuntimeError: MNIST is needed but not prepared; the
      message says how to prepare it.
  """
  path = directory(settings, config.eval.cache_dir)
  if path.exists():
    try:
      return _restore(path, settings)
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.warning('The cached MNIST classifier %s is unreadable (%s: %s); retraining it.',
                      path, type(e).__name__, e)
  start = time.perf_counter()
  train_images, train_labels = load_mnist(config, 'train')
  test_images, test_labels = load_mnist(config, 'test')
  params = classifier_lib.fit(settings, train_images, train_labels)
  classifier = classifier_lib.DigitClassifier(settings, params, from_cache=False)
  accuracy = classifier.accuracy(test_images, test_labels)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, params, force=True,
                      custom_metadata={'test_accuracy': accuracy,
                                       'settings': dataclasses.asdict(settings)})
  logging.info('Trained the MNIST classifier in %.1f s: test accuracy %.4f on %d digits; saved '
               'in %s.', time.perf_counter() - start, accuracy, len(test_labels), path)
  if accuracy < MIN_TEST_ACCURACY:
    logging.warning('The MNIST classifier reaches only %.4f on the test digits (expected >= %.2f).',
                    accuracy, MIN_TEST_ACCURACY)
  return MnistClassifier(classifier, accuracy, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = ml_collections.ConfigDict({
      'data': {'data_dir': FLAGS.data_dir, 'download': FLAGS.download},
      'eval': {'cache_dir': FLAGS.cache_dir},
  })
  mnist = load_or_train(MnistSettings(), config)
  print(f'MNIST classifier: test accuracy {mnist.test_accuracy:.4f} '
        f'({"restored from" if mnist.classifier.from_cache else "saved in"} {mnist.directory}).')


if __name__ == '__main__':
  flags.DEFINE_string('cache_dir', '~/.cache/ddgan_jax',
                      "Where the classifier is kept (config.eval.cache_dir of --mode=eval).")
  flags.DEFINE_string('data_dir', '', "TFDS data dir ('' = $TFDS_DATA_DIR or the TFDS default).")
  flags.DEFINE_bool('download', True, 'Whether TFDS may download and prepare MNIST.')
  app.run(main)
