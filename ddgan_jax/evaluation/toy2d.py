"""Mode-coverage metrics and scatter plots for the 2-D toy mixtures (VEEGAN/PacGAN protocol).

Definitions implemented by ``mode_metrics`` (K modes with centres c_k and std sigma):
  * Each sample is assigned to its nearest centre. It is *high quality* if that distance is at most
    3 sigma. Non-finite samples (a diverged generator) are never high quality.
  * A mode is *covered* if at least one high-quality sample is assigned to it. PacGAN's "modes
    recovered" counts the same thing: on both mixtures the 3-sigma discs are disjoint, so a sample
    within 3 sigma of a centre is always assigned to that centre.
  * Reverse KL = KL(p_gen || p_true) = sum_k p_gen(k) log(K p_gen(k)), where p_gen is the histogram
    of the high-quality samples over the modes and p_true is uniform; 0 log 0 = 0. It is +inf when
    no sample is high quality.
The protocol draws 2,500 samples (``config.eval.num_samples``).

As the evaluation family of dataset 'toy2d', ``score`` adds these metrics to
``<workdir>/eval/metrics_step<N>.json`` and draws ``eval/scatter_step<N>.png``; during training
(``training_metric``) the reverse KL is tracked.
"""

from collections.abc import Callable
import io

from etils import epath
import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageDraw

from ddgan_jax import toy2d
from ddgan_jax.evaluation import common

_HQ_RADIUS_IN_STDS = 3.0


def mode_metrics(samples: np.ndarray, name: str) -> dict:
  """Mode coverage, sample quality and reverse KL of samples from a toy mixture.

  Args:
    samples: (N, 2) generated points, in the data's coordinates.
    name: the toy mixture they should match, '25gaussians' or '8gaussians'.

  Returns:
    A JSON-serialisable dict:
      modes_covered: int, modes with at least one high-quality sample.
      num_modes: int, K.
      high_quality_fraction: float in [0, 1], high-quality samples / N.
      reverse_kl: float >= 0 (nats), KL(p_gen || uniform) over the high-quality samples.
      mode_counts: list of K ints, high-quality samples assigned to each mode.
      num_samples: int, N.
  """
  mixture = toy2d.get_mixture(name)
  samples = np.asarray(samples, dtype=np.float64)
  if samples.ndim != 2 or samples.shape[1] != 2 or samples.shape[0] == 0:
    raise ValueError(f'Expected samples of shape (N, 2) with N >= 1, got {samples.shape}.')
  finite = np.all(np.isfinite(samples), axis=1)
  dists = np.linalg.norm(
      np.where(finite[:, None], samples, 0.0)[:, None, :] - mixture.centers[None, :, :], axis=-1
  )
  nearest = np.argmin(dists, axis=1)
  nearest_dist = dists[np.arange(len(samples)), nearest]
  high_quality = finite & (nearest_dist <= _HQ_RADIUS_IN_STDS * mixture.std)
  counts = np.bincount(nearest[high_quality], minlength=mixture.num_modes)
  num_hq = int(counts.sum())
  if num_hq:
    p_gen = counts[counts > 0] / num_hq
    reverse_kl = float(np.sum(p_gen * np.log(p_gen * mixture.num_modes)))
  else:
    reverse_kl = float('inf')
  return {
      'modes_covered': int(np.count_nonzero(counts)),
      'num_modes': mixture.num_modes,
      'high_quality_fraction': num_hq / len(samples),
      'reverse_kl': reverse_kl,
      'mode_counts': counts.tolist(),
      'num_samples': len(samples),
  }


def save_scatter(
    path: str, samples: np.ndarray, name: str, size: int = 480, title: str = ''
) -> None:
  """Writes a PNG of samples over the mixture's centres and their 3-sigma circles.

  The view is the centres' bounding box plus one grid spacing; samples outside it are not drawn.

  Args:
    path: output file (.png, local or gs://); its folder must exist.
    samples: (N, 2) points in the data's coordinates.
    name: the toy mixture, '25gaussians' or '8gaussians'.
    size: image width and height in pixels.
    title: optional caption drawn at the top left.
  """
  mixture = toy2d.get_mixture(name)
  samples = np.asarray(samples, dtype=np.float64)
  if samples.ndim != 2 or samples.shape[1] != 2:
    raise ValueError(f'Expected samples of shape (N, 2), got {samples.shape}.')
  half_width = float(np.abs(mixture.centers).max()) + 1.5
  scale = size / (2.0 * half_width)

  def to_pixels(xy: np.ndarray) -> np.ndarray:
    return np.stack([(xy[:, 0] + half_width) * scale, (half_width - xy[:, 1]) * scale], axis=1)

  image = Image.new('RGB', (size, size), 'white')
  draw = ImageDraw.Draw(image)
  points = to_pixels(samples[np.all(np.isfinite(samples), axis=1)])
  inside = np.all((points >= 0) & (points < size), axis=1)
  for px, py in points[inside]:
    draw.rectangle([px - 0.5, py - 0.5, px + 0.5, py + 0.5], fill=(30, 70, 200))
  radius = _HQ_RADIUS_IN_STDS * mixture.std * scale
  for cx, cy in to_pixels(mixture.centers):
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=(230, 60, 60))
  if title:
    draw.text((6, 4), title, fill='black')
  buf = io.BytesIO()
  image.save(buf, format='PNG')
  epath.Path(path).write_bytes(buf.getvalue())


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling, on a toy mixture that does not exist."""
  toy2d.get_mixture(config.data.toy)


def score(
    config: ml_collections.ConfigDict, samples: np.ndarray, out_dir: epath.Path, step: int
) -> dict:
  """Mode metrics of EMA samples, and their scatter plot (written by process 0).

  Args:
    config: the run's config (data.dataset 'toy2d').
    samples: (N, 2) float samples, in the data's coordinates (a global jax.Array, or numpy).
    out_dir: the existing eval folder; receives scatter_step<step>.png.
    step: the checkpoint's training step, for the file name and the plot's title.

  Returns:
    ``mode_metrics`` of the samples plus 'num_timesteps' (T).
  """
  samples = common.on_host(samples)
  metrics = mode_metrics(samples, config.data.toy)
  metrics['num_timesteps'] = config.diffusion.num_timesteps
  if jax.process_index() == 0:
    title = f'{config.data.toy}  step {step}: {summary(metrics)}'
    save_scatter(str(out_dir / f'scatter_step{step}.png'), samples, config.data.toy, title=title)
  return metrics


def training_metric(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[str, Callable[[np.ndarray], float]]:
  """('reverse_kl', its function of the samples (N, 2)), for evaluation during training.

  It is +inf while no sample is high quality, and it ignores how many are: the best checkpoint by
  it covers the modes most evenly, which need not be the one with the most high-quality samples.
  """
  del mesh
  return 'reverse_kl', lambda samples: mode_metrics(common.on_host(samples),
                                                    config.data.toy)['reverse_kl']


def summary(metrics: dict) -> str:
  """A one-line account of ``score``'s metrics, for logs and plot titles."""
  return (
      f'T={metrics["num_timesteps"]}, {metrics["modes_covered"]}/{metrics["num_modes"]} modes '
      f'covered, {100 * metrics["high_quality_fraction"]:.1f}% high quality, reverse KL '
      f'{metrics["reverse_kl"]:.4f} (n={metrics["num_samples"]})'
  )
