"""Mode coverage of Stacked-MNIST (dataset 'stackmnist'), as VEEGAN, PacGAN and the DDGAN paper.

The samples are 32 x 32 stacks of three MNIST digits as R, G, B, padded by 2 pixels
(``tfds_sources.stackmnist_source``). ``score`` crops them back to 28 x 28, labels each channel with
the MNIST classifier of ``mnist_classifier.py`` (trained on TFDS MNIST on first use, then restored)
and reports the figures of ``modes.mode_metrics`` over config.eval.num_samples samples (26,000 in
the protocol). As a reference, it scores as many real stacks, drawn from config.seed as the data
are but from the MNIST test digits, which the classifier never saw. During training
(``training_metric``) the samples' reverse KL over the modes is tracked.
"""

from collections.abc import Callable
import math

from etils import epath
import jax
import ml_collections
import numpy as np

from ddgan_jax.data import local
from ddgan_jax.data import tfds_sources
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import mnist_classifier
from ddgan_jax.evaluation import modes

DIGIT_SIZE = 28
PAD = 2  # The data's padding: MNIST's 28 x 28 digits sit in 32 x 32 images.
summary = modes.summary


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling: 32 x 32 x 3 images, and MNIST prepared or downloadable.

  MNIST is read for the real reference (and to train the classifier on first use); where it is
  not prepared and cannot be downloaded, this raises at once with the command that prepares it.
  """
  size, channels = config.model.image_size, config.model.num_channels
  if (size, channels) != (DIGIT_SIZE + 2 * PAD, 3):
    raise ValueError(f'The Stacked-MNIST metrics crop 32 x 32 x 3 samples back to the 28 x 28 '
                     f'digits; got config.model.image_size={size}, num_channels={channels}.')
  tfds_sources.prepared_builder('mnist', config)


def score(
    config: ml_collections.ConfigDict, samples: np.ndarray, out_dir: epath.Path, step: int
) -> dict:
  """Mode metrics of the cropped samples and of as many real stacks of MNIST test digits.

  Args:
    config: the run's config; reads data.data_dir, data.download, diffusion.num_timesteps, seed,
      eval.cache_dir and eval.confidence.
    samples: uint8 (N, 32, 32, 3) samples, quantised as the saved PNGs are.
    out_dir: the eval folder (unused: no extra files).
    step: the checkpoint's training step (unused).

  Returns:
    {'samples': ``modes.stacked_scores`` of the cropped samples, 'real': of N stacks of test
     digits, 'num_timesteps': T, 'classifier': its test accuracy, directory and the confidence}.
  """
  del out_dir, step
  samples = common.on_host(samples)
  mnist = mnist_classifier.load_or_train(mnist_classifier.MnistSettings(), config)
  test_images, test_labels = mnist_classifier.load_mnist(config, 'test')
  n = len(samples)
  test_stacks = local.stack_three(
      test_images[..., 0], test_labels, permutations=math.ceil(n / len(test_labels)),
      seed=config.seed, num_examples=n, image_size=DIGIT_SIZE,
  )
  real, _ = test_stacks.load(np.arange(n))

  def predict(images: np.ndarray) -> np.ndarray:
    return mnist.classifier.predict(images)[0]

  confidence = config.eval.confidence
  return {
      'samples': modes.stacked_scores(samples[:, PAD:-PAD, PAD:-PAD], predict, confidence),
      'real': modes.stacked_scores(real, predict, confidence),
      'num_timesteps': config.diffusion.num_timesteps,
      'classifier': {
          'test_accuracy': mnist.test_accuracy,
          'directory': str(mnist.directory),
          'confidence': confidence,
      },
  }


def training_metric(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[str, Callable[[np.ndarray], float]]:
  """('reverse_kl', its function of uint8 samples (N, 32, 32, 3)), for evaluation during training.

  The value is ``score``'s samples/reverse_kl; the classifier is restored or trained here, once.
  """
  del mesh
  mnist = mnist_classifier.load_or_train(mnist_classifier.MnistSettings(), config)

  def reverse_kl(samples: np.ndarray) -> float:
    samples = common.on_host(samples)
    scores = modes.stacked_scores(samples[:, PAD:-PAD, PAD:-PAD],
                                  lambda x: mnist.classifier.predict(x)[0], config.eval.confidence)
    return scores['reverse_kl']

  return 'reverse_kl', reverse_kl
