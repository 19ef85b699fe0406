"""Digit metrics from a small classifier trained on scikit-learn's digits (no download).

``digit_scores`` scores a set of uint8 digits with the classifier of ``classifier.py``:
  * confident_fraction: the fraction whose most likely class has probability >= ``confidence``.
  * class_histogram: the fraction of images assigned (argmax) to each of the 10 classes.
  * reverse_kl: KL(histogram || uniform over 10) in nats; 0 when every class is equally frequent,
    ln 10 when all images are one class.
  * frechet_distance: the Fréchet distance between Gaussians fitted (in float64) to the
    classifier's penultimate features of the images and of a reference set of real digits.

As the evaluation family of dataset 'digits', ``score`` reports these for the samples (against
the held-out digits, which the classifier never saw) and for the held-out digits themselves
(against the classifier's training digits): the latter are what data drawn from the training
distribution score. Their 'confident_ratio' is samples' confident fraction / real's. During
training (``training_metric``) the samples' Fréchet distance is tracked.

With config.eval.per_level (``levels.py``), the chains started from real held-out digits noised to
each level are scored as the samples are (``score_levels``); the discriminator's view takes the
training digits as the run reads them (``level_images``).
"""

from collections.abc import Callable
import warnings

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np
import scipy.linalg

from ddgan_jax.data import local
from ddgan_jax.evaluation import classifier as classifier_lib
from ddgan_jax.evaluation import common

_SQRTM_EPS = 1e-6
_MAX_IMAGINARY = 1e-3


def reverse_kl_to_uniform(histogram: np.ndarray) -> float:
  """KL(p || uniform) = sum_k p_k log(K p_k) in nats, with 0 log 0 = 0.

  Args:
    histogram: (K,) non-negative counts or fractions, not all zero.

  Returns:
    A float in [0, log K].
  """
  p = np.asarray(histogram, np.float64)
  p = p / p.sum()
  nonzero = p[p > 0]
  return float(np.sum(nonzero * np.log(nonzero * len(p))))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and covariance (D, D) in float64 of features (N, D), N >= 2."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'Expected features (N, D) with N >= 2, got shape {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> float:
  """Fréchet distance |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) of two Gaussians, in float64.

  When C1 C2 is near singular, its square root is taken of (C1 + eps I)(C2 + eps I) instead, as in
  the reference FID code.

  Args:
    mu1, mu2: (D,) means.
    cov1, cov2: (D, D) covariances.

  Returns:
    The distance, a float >= 0 (rounding below 0 is clipped).
  """
  mu1, mu2, cov1, cov2 = (np.asarray(a, np.float64) for a in (mu1, mu2, cov1, cov2))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)  # Handled by the offset below.
    root = scipy.linalg.sqrtm(cov1 @ cov2)
  if not np.all(np.isfinite(root)) or np.abs(np.imag(root)).max() > _MAX_IMAGINARY:
    offset = _SQRTM_EPS * np.eye(len(mu1))
    root = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
  diff = mu1 - mu2
  distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(np.real(root))
  return max(float(distance), 0.0)


def digit_scores(
    images: np.ndarray,
    reference: np.ndarray,
    classifier: classifier_lib.DigitClassifier,
    confidence: float = 0.9,
) -> dict:
  """Classifier scores of uint8 digits against a reference set of real digits.

  Args:
    images: uint8 (N, S, S, 1), N >= 2, the digits to score.
    reference: uint8 (M, S, S, 1), M >= 2, real digits for the Fréchet distance.
    classifier: a classifier for S x S digits.
    confidence: the probability at or above which a classification counts as confident.

  Returns:
    A JSON-serialisable dict: confident_fraction, class_histogram (10 fractions), reverse_kl,
    frechet_distance (see the module docstring) and num_images (N).
  """
  probs, features = classifier.predict(images)
  _, reference_features = classifier.predict(reference)
  counts = np.bincount(probs.argmax(axis=1), minlength=classifier_lib.NUM_CLASSES)
  return {
      'confident_fraction': float(np.mean(probs.max(axis=1) >= confidence)),
      'class_histogram': (counts / len(images)).tolist(),
      'reverse_kl': reverse_kl_to_uniform(counts),
      'frechet_distance': frechet_distance(
          *feature_statistics(features), *feature_statistics(reference_features)
      ),
      'num_images': len(images),
  }


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling, on a config whose samples the classifier cannot read."""
  if config.model.num_channels != 1:
    raise ValueError(
        f'The digits metrics need grey images (config.model.num_channels=1), got '
        f'{config.model.num_channels}.'
    )


def score(
    config: ml_collections.ConfigDict, samples: np.ndarray, out_dir: epath.Path, step: int
) -> dict:
  """Digit metrics of the samples and of the held-out real digits.

  Args:
    config: the run's config (data.dataset 'digits'); reads model.image_size, eval.cache_dir and
      eval.confidence.
    samples: uint8 (N, S, S, 1) samples, quantised as the saved PNGs are (a global jax.Array, or
      numpy); every process scores all of them.
    out_dir: the eval folder (unused: the digits family writes no extra files).
    step: the checkpoint's training step (unused).

  Returns:
    {'samples': digit_scores of the samples against the held-out digits,
     'real': digit_scores of the held-out digits against the classifier's training digits,
     'confident_ratio': samples' confident_fraction / real's,
     'classifier': its held-out accuracy, cache file and the confidence threshold}.
  """
  del out_dir, step
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  classifier = classifier_lib.load_or_train(settings, config.eval.cache_dir)
  split = classifier_lib.digits_split(settings.image_size, settings.heldout_fraction,
                                      settings.seed)
  confidence = config.eval.confidence
  fake = digit_scores(common.on_host(samples), split.heldout_images, classifier, confidence)
  real = digit_scores(split.heldout_images, split.train_images, classifier, confidence)
  accuracy = classifier.accuracy(split.heldout_images, split.heldout_labels)
  if accuracy < 0.95:
    logging.warning('The %dx%d digit classifier has a held-out accuracy of only %.3f.',
                    settings.image_size, settings.image_size, accuracy)
  return {
      'samples': fake,
      'real': real,
      'confident_ratio': fake['confident_fraction'] / max(real['confident_fraction'], 1e-12),
      'classifier': {
          'heldout_accuracy': accuracy,
          'num_heldout': len(split.heldout_labels),
          'cache_file': settings.cache_name(),
          'confidence': confidence,
      },
  }


def level_images(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """The real digits of the per-level metrics.

  Returns:
    uint8 (N, S, S, 1) training digits as the run reads them (``local.digits_source``, in dataset
    order) and uint8 (M, S, S, 1) held-out digits of the classifier's split.
  """
  source = local.digits_source(config)
  train, _ = source.load(np.arange(source.num_examples))
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  split = classifier_lib.digits_split(settings.image_size, settings.heldout_fraction,
                                      settings.seed)
  return train, split.heldout_images


def score_levels(config: ml_collections.ConfigDict, chains: dict[int, np.ndarray]) -> dict:
  """``digit_scores`` of the chains from each start level against the held-out digits.

  Args:
    config: the run's config; reads model.image_size, eval.cache_dir and eval.confidence.
    chains: start level k -> uint8 (N, S, S, 1) samples of the chains started there.

  Returns:
    {k: digit_scores of chains[k]}, scored as ``score`` scores the samples from noise.
  """
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  classifier = classifier_lib.load_or_train(settings, config.eval.cache_dir)
  split = classifier_lib.digits_split(settings.image_size, settings.heldout_fraction,
                                      settings.seed)
  return {k: digit_scores(samples, split.heldout_images, classifier, config.eval.confidence)
          for k, samples in chains.items()}


def level_summary(scores: dict) -> str:
  """A few words on the ``digit_scores`` of one start level, for the per-level log line."""
  return (f'{100 * scores["confident_fraction"]:.1f}% confident, '
          f'reverse KL {scores["reverse_kl"]:.3f}')


def training_metric(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[str, Callable[[np.ndarray], float]]:
  """('frechet_distance', its function of uint8 samples), for evaluation during training.

  The distance is ``score``'s samples/frechet_distance: the samples' classifier features against
  the held-out digits'. The classifier and the held-out statistics are loaded or computed here,
  once.
  """
  del mesh
  settings = classifier_lib.ClassifierSettings(image_size=config.model.image_size)
  classifier = classifier_lib.load_or_train(settings, config.eval.cache_dir)
  split = classifier_lib.digits_split(settings.image_size, settings.heldout_fraction,
                                      settings.seed)
  reference = feature_statistics(classifier.predict(split.heldout_images)[1])

  def distance(samples: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(classifier.predict(common.on_host(samples))[1]),
                            *reference)

  return 'frechet_distance', distance


def summary(metrics: dict) -> str:
  """A one-line account of ``score``'s metrics, for logs."""
  fake, real = metrics['samples'], metrics['real']
  return (
      f'confident {100 * fake["confident_fraction"]:.1f}% '
      f'(real {100 * real["confident_fraction"]:.1f}%, ratio {metrics["confident_ratio"]:.3f}), '
      f'reverse KL {fake["reverse_kl"]:.4f} '
      f'(real {real["reverse_kl"]:.4f}), Fréchet distance {fake["frechet_distance"]:.3f} '
      f'(real {real["frechet_distance"]:.3f}) (n={fake["num_images"]})'
  )
