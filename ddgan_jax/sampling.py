"""Sampling with the EMA generator: one batched, device-count independent loop, and pictures.

Every sampler of the package (``--mode=sample`` in ``sample_files``, ``ddgan_jax.load_sampler``,
``--mode=eval`` and the training grid) draws through ``stream_batches``: batch b of a stream is
drawn from ``fold_in(key, b)`` at its full global shape and read before the next one, with its
progress logged. ``restore_state`` restores any checkpoint of a workdir.
"""

from collections.abc import Callable, Iterator
import datetime
import functools
import math
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from ddgan_jax import checkpoints
from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import train_state as train_state_lib

_TOY_EXTENT = 6.0  # The toy histograms cover [-6, 6]^2; the toy data lie within about 4.5.
_TOY_BINS = 256


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, with axis name 'data'."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh, batch: int) -> NamedSharding:
  """Splits the leading axis over 'data' when it divides evenly, else replicates."""
  return NamedSharding(mesh, P('data') if batch % mesh.size == 0 else P())


def make_batch_fn(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    schedule: diffusion.Schedule,
    mesh: Mesh,
) -> Callable[[Any, jax.Array], jax.Array]:
  """Returns batch_fn(variables, key) -> one global batch of float32 samples, split over 'data'.

  The batch has ``config.sampling.batch_size`` rows at its full (global) shape, so its numbers do
  not depend on the device or process count. It is compiled once, on its first call.
  """
  batch = config.sampling.batch_size
  if batch < 1:
    raise ValueError(f'config.sampling.batch_size must be positive, got {batch}.')
  shape = train_state_lib.data_shape(config, batch)
  replicated = NamedSharding(mesh, P())

  def sample_batch(variables, rng):
    g = lambda x, t, z: generator.apply(variables, x, t, z, train=False)
    return diffusion.sample(rng, schedule, g, shape, config.model.nz)

  return jax.jit(
      sample_batch, in_shardings=(replicated, replicated), out_shardings=batch_sharding(mesh, batch)
  )


class Progress:
  """Logs items done, items/s and an ETA, at most every ``every_s`` seconds and at the end."""

  def __init__(self, total: int, what: str, every_s: float = 5.0):
    self._total, self._what, self._every_s = total, what, every_s
    self._start = self._last = time.perf_counter()

  def update(self, done: int) -> None:
    now = time.perf_counter()
    if now - self._last < self._every_s and done < self._total:
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    eta = datetime.timedelta(seconds=round((self._total - done) / max(rate, 1e-9)))
    logging.info('%s: %d/%d (%.1f/s, ETA %s).', self._what, done, self._total, rate, eta)


def stream_batches(
    batch_fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    rng: jax.Array,
    num: int,
    batch: int,
    what: str,
) -> Iterator[tuple[int, jax.Array, int]]:
  """Draws ``num`` samples batch by batch, logging progress; the one sampling loop.

  Batch b is ``batch_fn(variables, fold_in(rng, b))``. Batch b + 1 is dispatched before b is
  yielded, so the devices compute it while the caller reads b (``gathered_rows`` or
  ``local_rows``): at most two batches are alive at a time, whatever ``num``.

  Args:
    batch_fn: from ``make_batch_fn``, drawing ``batch`` rows per call.
    variables: the generator's variables.
    rng: the stream's key.
    num: how many samples in all.
    batch: the rows per call of ``batch_fn``.
    what: a name for the progress log.

  Yields:
    (start, out, count): the global index of the batch's first row, the global batch (a jax.Array
    with ``batch`` rows), and how many of its rows are wanted (the last batch is truncated).
  """
  progress = Progress(num, what)
  num_batches = math.ceil(num / batch)
  draw = lambda b: batch_fn(variables, jax.random.fold_in(rng, b))
  pending = draw(0)
  for b in range(num_batches):
    out, start = pending, b * batch
    if b + 1 < num_batches:
      pending = draw(b + 1)
    count = min(batch, num - start)
    yield start, out, count
    progress.update(start + count)


@functools.cache
def _replicator(mesh: Mesh) -> Callable[[jax.Array], jax.Array]:
  return jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, P()))


def gathered_rows(out: jax.Array, count: int) -> np.ndarray:
  """The first ``count`` rows of a global batch, on every process."""
  if not out.is_fully_replicated:
    out = _replicator(out.sharding.mesh)(out)
  return np.asarray(out.addressable_data(0))[:count]


def local_rows(out: jax.Array, count: int) -> list[tuple[int, np.ndarray]]:
  """This process's share of the first ``count`` rows of a global batch, as (first row, rows).

  A batch split over 'data' gives each process the rows its devices hold; a replicated one is
  cut into one contiguous block per process. Together the processes cover each row once.
  """
  if out.is_fully_replicated:
    rows = np.asarray(out.addressable_data(0))
    p, n = jax.process_index(), jax.process_count()
    lo, hi = p * out.shape[0] // n, (p + 1) * out.shape[0] // n
    blocks = {lo: rows[lo:hi]}
  else:
    blocks = {}
    for shard in out.addressable_shards:
      blocks.setdefault(shard.index[0].start or 0, shard.data)
  kept = []
  for lo in sorted(blocks):
    rows = np.asarray(blocks[lo])[:max(count - lo, 0)]
    if len(rows):
      kept.append((lo, rows))
  return kept


def make_generate_fn(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    schedule: diffusion.Schedule,
    mesh: Mesh,
):
  """Returns generate(variables, rng, num) -> float32 samples (num, ...) as a numpy array.

  For the few samples of a picture: every process gets all of them. The samples are those of
  ``stream_batches`` with batches of ``config.sampling.batch_size``, so they do not depend on the
  device count or on ``num`` beyond truncation.
  """
  batch_fn = make_batch_fn(config, generator, schedule, mesh)

  def generate(variables, rng: jax.Array, num: int) -> np.ndarray:
    return np.concatenate([
        gathered_rows(out, count) for _, out, count in
        stream_batches(batch_fn, variables, rng, num, config.sampling.batch_size, 'Sampled')
    ])

  return generate


def to_uint8(x: np.ndarray | jax.Array, centered: bool) -> np.ndarray | jax.Array:
  """Data-range floats ([-1, 1] if centered, else [0, 1]) to uint8, rounding half up.

  A numpy array is quantised on the host; a jax.Array (or a tracer) on its devices, by the same
  float32 operations, into an array sharded as ``x``.
  """
  xp = np if isinstance(x, np.ndarray) else jnp
  unit = (x + 1.0) / 2.0 if centered else x
  return xp.clip(xp.floor(unit * 255.0 + 0.5), 0, 255).astype(xp.uint8)


def image_grid(images: np.ndarray, gap: int = 2) -> np.ndarray:
  """Tiles uint8 images (N, H, W, C) into a near-square grid with mid-grey borders.

  Args:
    images: (N, H, W, C) uint8.
    gap: border width in pixels, around and between the tiles.

  Returns:
    (rows (H + gap) + gap, cols (W + gap) + gap, C) uint8.
  """
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), 128, np.uint8)
  for i, img in enumerate(images):
    r, k = divmod(i, cols)
    top, left = gap + r * (h + gap), gap + k * (w + gap)
    grid[top:top + h, left:left + w] = img
  return grid


def toy_histogram(samples: np.ndarray) -> np.ndarray:
  """A (256, 256, 1) uint8 log-density picture of 2-D samples (N, 2) over [-6, 6]^2."""
  hist, _, _ = np.histogram2d(
      samples[:, 1], samples[:, 0], bins=_TOY_BINS, range=[[-_TOY_EXTENT, _TOY_EXTENT]] * 2
  )
  picture = np.log1p(hist[::-1])
  picture = picture / max(picture.max(), 1e-12)
  return (picture * 255.0).astype(np.uint8)[..., None]


def samples_picture(samples: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """A uint8 (H, W, C) picture of float samples: an image grid, or a histogram for 2-D data."""
  if samples.ndim == 2:
    return toy_histogram(samples)
  return image_grid(to_uint8(samples, config.model.centered))


def restore_state(
    config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, step: int | None = None
) -> train_state_lib.TrainState:
  """Restores a training state of ``workdir``, replicated over ``mesh``.

  Args:
    config: the config the run was trained with.
    workdir: the training workdir.
    mesh: the devices to replicate the state over.
    step: the checkpoint's step, periodic or best (``checkpoints.BEST_DIR``); None restores the
      newest readable periodic one.

  Raises:
    checkpoints.NoCheckpointError: no checkpoint, or none of ``step``; the message lists those
      available.
  """
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  target = train_state_lib.abstract_train_state(config, generator, discriminator, 1, mesh)
  ckpt = checkpoints.from_config(workdir, config)
  try:
    if step is None:
      return ckpt.restore_latest(target)
    return ckpt.restore_step(step, target)
  except checkpoints.NoCheckpointError as e:
    if step is not None:
      raise
    raise checkpoints.NoCheckpointError(
        f'{e} Train first (--mode=train with the same --workdir) or pass the workdir of a '
        'trained run.'
    ) from None
  finally:
    ckpt.close()
