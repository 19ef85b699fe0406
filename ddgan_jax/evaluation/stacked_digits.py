"""Mode coverage of stacked digits (dataset 'stacked_digits'): Stacked-MNIST with no download.

The data stack three of scikit-learn's digits as R, G, B (``local.stacked_digits_source``): 1,000
modes. ``score`` labels each channel of the samples with the digits classifier of
``classifier.py`` (trained on first use, in seconds, at the run's image size) and reports the
figures of ``modes.mode_metrics``. As a reference, it scores as many real stacks, drawn from
config.seed as the data are but from the held-out digits, which the classifier never saw: what
data drawn from the training distribution score. During training (``training_metric``) the
samples' reverse KL over the modes is tracked.
"""

from collections.abc import Callable
import math

from etils import epath
import jax
import ml_collections
import numpy as np

from ddgan_jax.data import local
from ddgan_jax.evaluation import classifier as classifier_lib
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import modes

summary = modes.summary


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling, on samples that are not three-channel stacks."""
  if config.model.num_channels != 3:
    raise ValueError(f'Stacked digits have 3 channels (R, G, B); got '
                     f'config.model.num_channels={config.model.num_channels}.')


def score(
    config: ml_collections.ConfigDict, samples: np.ndarray, out_dir: epath.Path, step: int
) -> dict:
  """Mode metrics of the samples and of as many real stacks of held-out digits.

  Args:
    config: the run's config; reads model.image_size, diffusion.num_timesteps, seed,
      eval.cache_dir and eval.confidence.
    samples: uint8 (N, S, S, 3) samples, quantised as the saved PNGs are.
    out_dir: the eval folder (unused: no extra files).
    step: the checkpoint's training step (unused).

  Returns:
    {'samples': ``modes.stacked_scores`` of the samples, 'real': of N held-out stacks,
     'num_timesteps': T, 'classifier': its held-out accuracy, cache file and the confidence}.
  """
  del out_dir, step
  samples = common.on_host(samples)
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  classifier = classifier_lib.load_or_train(settings, config.eval.cache_dir)
  split = classifier_lib.digits_split(settings.image_size, settings.heldout_fraction,
                                      settings.seed)
  n = len(samples)
  heldout = local.stack_three(
      split.heldout_images[..., 0], split.heldout_labels,
      permutations=math.ceil(n / len(split.heldout_labels)), seed=config.seed, num_examples=n,
      image_size=settings.image_size,
  )
  real, _ = heldout.load(np.arange(n))

  def predict(images: np.ndarray) -> np.ndarray:
    return classifier.predict(images)[0]

  confidence = config.eval.confidence
  return {
      'samples': modes.stacked_scores(samples, predict, confidence),
      'real': modes.stacked_scores(real, predict, confidence),
      'num_timesteps': config.diffusion.num_timesteps,
      'classifier': {
          'heldout_accuracy': classifier.accuracy(split.heldout_images, split.heldout_labels),
          'cache_file': settings.cache_name(),
          'confidence': confidence,
      },
  }


def training_metric(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[str, Callable[[np.ndarray], float]]:
  """('reverse_kl', its function of uint8 stacks (N, S, S, 3)), for evaluation during training.

  The value is ``score``'s samples/reverse_kl; the classifier is loaded or trained here, once.
  """
  del mesh
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  classifier = classifier_lib.load_or_train(settings, config.eval.cache_dir)

  def reverse_kl(samples: np.ndarray) -> float:
    samples = common.on_host(samples)
    scores = modes.stacked_scores(samples, lambda x: classifier.predict(x)[0],
                                  config.eval.confidence)
    return scores['reverse_kl']

  return 'reverse_kl', reverse_kl
