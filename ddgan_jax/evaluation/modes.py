"""Mode counting on stacked digits, the Stacked-MNIST protocol of VEEGAN, PacGAN and DDGAN.

A sample stacks C digits as channels (C = 3: R, G, B). A classifier labels each channel with one of
K = 10 digits, and the sample's *mode* is the C-digit number they spell,
sum_c d_c K^(C - 1 - c): 100 d_R + 10 d_G + d_B, one of K^C = 1000 modes, as the data's labels
(``ddgan_jax.data.local.stack_three``). ``mode_metrics`` reports
  * modes_covered: the modes with at least one sample (the protocol draws 26,000 samples);
  * reverse_kl: KL(p_gen || uniform over the K^C modes) in nats, p_gen being the histogram of the
    modes of all samples (0 log 0 = 0); M equally frequent modes give ln(K^C / M);
  * confident_fraction: the fraction of samples whose C channels are all classified with a
    probability of at least the confidence threshold.
The evaluation families ``stacked_digits`` and ``stacked_mnist`` score samples with it.
"""

from collections.abc import Callable

import numpy as np

from ddgan_jax.evaluation import digits

NUM_CLASSES = 10


def mode_index(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
  """The mode of each sample from its channels' labels.

  Args:
    labels: int (N, C), the class of each channel, in [0, num_classes).

  Returns:
    int64 (N,): sum_c labels[:, c] * num_classes^(C - 1 - c), in [0, num_classes^C).
  """
  labels = np.asarray(labels)
  if labels.ndim != 2 or np.any(labels < 0) or np.any(labels >= num_classes):
    raise ValueError(f'Expected labels (N, C) in [0, {num_classes}), got shape {labels.shape} '
                     f'with values in [{labels.min(initial=0)}, {labels.max(initial=0)}].')
  weights = num_classes ** np.arange(labels.shape[1] - 1, -1, -1, dtype=np.int64)
  return labels.astype(np.int64) @ weights


def mode_metrics(labels: np.ndarray, confident: np.ndarray,
                 num_classes: int = NUM_CLASSES) -> dict:
  """Modes covered, reverse KL to uniform and confident fraction of classified stacks.

  Args:
    labels: int (N, C), N >= 1, the most likely class of each channel.
    confident: bool (N, C), whether each channel's class has probability >= the threshold.
    num_classes: K, classes per channel.

  Returns:
    A JSON-serialisable dict: modes_covered (int), num_modes (K^C), reverse_kl (nats),
    confident_fraction, mode_counts (K^C ints, samples per mode) and num_samples (N).
  """
  modes = mode_index(labels, num_classes)
  if len(modes) == 0 or np.shape(confident) != np.shape(labels):
    raise ValueError(f'Expected N >= 1 and confident of the labels\' shape {np.shape(labels)}, '
                     f'got {np.shape(confident)}.')
  num_modes = num_classes ** np.shape(labels)[1]
  counts = np.bincount(modes, minlength=num_modes)
  return {
      'modes_covered': int(np.count_nonzero(counts)),
      'num_modes': num_modes,
      'reverse_kl': digits.reverse_kl_to_uniform(counts),
      'confident_fraction': float(np.mean(np.all(confident, axis=1))),
      'mode_counts': counts.tolist(),
      'num_samples': len(modes),
  }


def stacked_scores(
    images: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], confidence: float
) -> dict:
  """``mode_metrics`` of uint8 stacks, each channel classified by ``predict``.

  Args:
    images: uint8 (N, S, S, C).
    predict: maps uint8 digits (N, S, S, 1) to class probabilities (N, K).
    confidence: the probability at or above which a channel's class counts as confident.

  Returns:
    ``mode_metrics`` of the channels' most likely classes.
  """
  probs = np.stack([predict(images[..., c:c + 1]) for c in range(images.shape[-1])], axis=1)
  return mode_metrics(probs.argmax(axis=-1), probs.max(axis=-1) >= confidence, probs.shape[-1])


def summary(metrics: dict) -> str:
  """A one-line account of a stacked family's metrics ('samples' and 'real'), for logs."""
  fake, real = metrics['samples'], metrics['real']
  return (
      f'T={metrics["num_timesteps"]}, {fake["modes_covered"]}/{fake["num_modes"]} modes covered '
      f'(real {real["modes_covered"]}), reverse KL {fake["reverse_kl"]:.4f} '
      f'(real {real["reverse_kl"]:.4f}), all channels confident '
      f'{100 * fake["confident_fraction"]:.1f}% (real {100 * real["confident_fraction"]:.1f}%) '
      f'(n={fake["num_samples"]})'
  )
