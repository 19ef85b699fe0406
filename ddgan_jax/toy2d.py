"""2-D mixture-of-Gaussians toy data for the paper's mode-coverage experiment.

Two equally weighted, isotropic mixtures, in their original coordinates (no rescaling):
  '25gaussians': 25 modes on the grid {-4, -2, 0, 2, 4}^2, std 0.05 (the 2-D grid of PacGAN,
      Lin et al. 2018, used by the DDGAN paper).
  '8gaussians': 8 modes at (2 cos(2 pi k / 8), 2 sin(2 pi k / 8)), std 0.02 (the 2-D ring of
      VEEGAN, Srivastava et al. 2017).

``toy_batches`` is the 'toy2d' source of ``ddgan_jax.input_pipeline``: fresh points every step,
drawn from (config.seed, global step) only.
"""

from collections.abc import Iterator
import dataclasses

import ml_collections
import numpy as np

from ddgan_jax.data import indexed

# The data are unlimited; this nominal size only sets the steps per "epoch" for the per-epoch
# learning-rate schedule and for config.training.num_steps = -1 (num_epochs epochs).
NOMINAL_NUM_EXAMPLES = 100_000
_TOY_STREAM = 2  # Keeps these draws apart from the image pipeline's streams 0 and 1.


@dataclasses.dataclass(frozen=True)
class Mixture:
  """An equally weighted mixture of isotropic 2-D Gaussians.

  Attributes:
    centers: (K, 2) float32 mode centres.
    std: per-coordinate standard deviation of every mode.
  """

  centers: np.ndarray
  std: float

  @property
  def num_modes(self) -> int:
    return self.centers.shape[0]


def _grid_centers() -> np.ndarray:
  axis = np.arange(-4.0, 5.0, 2.0)
  xs, ys = np.meshgrid(axis, axis, indexing='ij')
  return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def _ring_centers() -> np.ndarray:
  angles = 2.0 * np.pi * np.arange(8) / 8
  return (2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


_MIXTURES = {
    '25gaussians': Mixture(centers=_grid_centers(), std=0.05),
    '8gaussians': Mixture(centers=_ring_centers(), std=0.02),
}

TOY_NAMES = tuple(_MIXTURES)


def get_mixture(name: str) -> Mixture:
  """The mixture called ``name`` ('25gaussians' or '8gaussians')."""
  if name not in _MIXTURES:
    raise ValueError(f'Unknown toy dataset {name!r}: use one of {TOY_NAMES} (config.data.toy).')
  return _MIXTURES[name]


def sample_toy(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws n points from a toy mixture; the same generator state gives the same points.

  Args:
    name: '25gaussians' or '8gaussians'.
    n: number of points (>= 0).
    rng: numpy generator; it is advanced.

  Returns:
    points: (n, 2) float32 samples.
    modes: (n,) int32 index, into ``get_mixture(name).centers``, of each point's mode.
  """
  mixture = get_mixture(name)
  if int(n) != n or n < 0:
    raise ValueError(f'Number of toy samples must be a non-negative integer, got {n!r}.')
  modes = rng.integers(0, mixture.num_modes, size=int(n)).astype(np.int32)
  noise = rng.standard_normal((int(n), 2))
  points = mixture.centers[modes] + mixture.std * noise
  return points.astype(np.float32), modes


def toy_batches(
    config: ml_collections.ConfigDict, shard: indexed.Shard
) -> tuple[Iterator[dict[str, np.ndarray]], int]:
  """Input-pipeline builder for ``config.data.dataset = 'toy2d'`` (mixture ``config.data.toy``).

  Global step s draws the whole global batch from a generator seeded with (config.seed, s), and
  host p keeps rows [p B / P, (p + 1) B / P): the stream depends only on the seed and the global
  batch, so resuming at any step, or changing the host count, gives the same data.

  Args:
    config: the full config (seed, data.toy, model.num_channels).
    shard: which global steps and which rows of each global batch to produce.

  Returns:
    An endless iterator of {'image': float32 (shard.batch_size, 2) points, 'label': int32
    (shard.batch_size,) mode indices}, and ``NOMINAL_NUM_EXAMPLES``.
  """
  name = config.data.toy
  get_mixture(name)  # Fails now, listing the valid names, rather than at the first batch.
  if config.model.num_channels != 2:
    raise ValueError(
        f'The 2-D toy data need config.model.num_channels=2, got {config.model.num_channels}.'
    )
  seed_words = [config.seed & 0xFFFFFFFF, (config.seed >> 32) & 0xFFFFFFFF]
  lo = shard.process_index * shard.batch_size

  def batches() -> Iterator[dict[str, np.ndarray]]:
    step = shard.start_step
    while True:
      rng = np.random.default_rng([_TOY_STREAM, step, *seed_words])
      points, modes = sample_toy(name, shard.global_batch, rng)
      yield {'image': points[lo:lo + shard.batch_size], 'label': modes[lo:lo + shard.batch_size]}
      step += 1

  return batches(), NOMINAL_NUM_EXAMPLES
