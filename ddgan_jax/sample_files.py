"""``--mode=sample``: a checkpoint's EMA samples streamed to disk, a batch at a time.

For the checkpoint of step S, ``sample_and_save`` writes under ``<workdir>/samples/``:

  step<S>_seed<seed>_n<num>_batch<B>/     the samples (the name holds all they depend on):
      images_<first>_<end>.npz            format 'npz': uint8 NHWC ``images``, global rows
                                          [first, end), at most sampling.shard_size of them;
      <index>.png                         format 'png': one image per file;
      samples_<first>_<end>.npz           the 2-D toy data (always npz): float32 ``samples`` (n, 2).
  step<S>_seed<seed>_n<num>_batch<B>.png  the first sampling.grid_images samples, as a grid (a
                                          2-D histogram for the toy data).

Indices are global row numbers, 8 digits. Each process writes the rows its devices computed, so
no two processes write the same file and together they write every row. A single process writes
the same files on any device count. A rerun first deletes the directory it writes.
"""

import io

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from PIL import Image

from ddgan_jax import sampler as sampler_lib
from ddgan_jax import sampling

SAMPLES_DIR = 'samples'
FORMATS = ('npz', 'png')


def write_png(path: epath.Path, picture: np.ndarray) -> None:
  """Writes a uint8 (H, W, C) picture, C in {1, 3}, as a PNG."""
  buf = io.BytesIO()
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buf, format='PNG')
  path.write_bytes(buf.getvalue())


class _NpzShards:
  """Gathers consecutive rows and writes them as .npz shards of at most ``size`` rows."""

  def __init__(self, directory: epath.Path, key: str, size: int):
    self._directory, self._key, self._size = directory, key, size
    self._rows, self._first, self._count = [], 0, 0

  def add(self, first: int, rows: np.ndarray) -> None:
    """Adds rows (n, ...) whose global indices are first, ..., first + n - 1."""
    if self._count and first != self._first + self._count:
      self.flush()
    while len(rows):
      if not self._count:
        self._first = first
      take = rows[:self._size - self._count]
      self._rows.append(take)
      self._count += len(take)
      first, rows = first + len(take), rows[len(take):]
      if self._count == self._size:
        self.flush()

  def flush(self) -> None:
    if not self._count:
      return
    end = self._first + self._count
    with (self._directory / f'{self._key}_{self._first:08d}_{end:08d}.npz').open('wb') as f:
      np.savez(f, **{self._key: np.concatenate(self._rows)})
    self._rows, self._count = [], 0


class _PngFiles:
  """Writes each image (H, W, C) uint8 to ``<global index>.png``."""

  def __init__(self, directory: epath.Path):
    self._directory = directory

  def add(self, first: int, rows: np.ndarray) -> None:
    for i, image in enumerate(rows):
      write_png(self._directory / f'{first + i:08d}.png', image)

  def flush(self) -> None:
    pass


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, naming the field, for sampling settings that cannot work."""
  s = config.sampling
  problems = []
  for name in ('num_images', 'batch_size', 'shard_size'):
    if s[name] < 1:
      problems.append(f'config.sampling.{name} must be positive, got {s[name]}.')
  if s.grid_images < 0:
    problems.append(f'config.sampling.grid_images must be >= 0 (0: no picture), got '
                    f'{s.grid_images}.')
  if s.step < -1:
    problems.append(f'config.sampling.step must be a checkpoint step, or -1 for the newest; got '
                    f'{s.step}.')
  if s.format not in FORMATS:
    problems.append(f'config.sampling.format must be one of {FORMATS}, got {s.format!r}.')
  if problems:
    raise ValueError('Invalid sampling config:\n  ' + '\n  '.join(problems))


def sample_and_save(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Writes ``config.sampling.num_images`` EMA samples of ``config.seed`` (layout above).

  Args:
    config: the run's config; ``config.sampling`` says which checkpoint, how many samples and
      in which format.
    workdir: the training workdir (local or gs://); must hold a checkpoint.

  Returns:
    The directory of the samples.
  """
  check_config(config)
  s = config.sampling
  sampler = sampler_lib.Sampler(config, workdir, None if s.step == -1 else s.step)
  if s.format == 'png' and not sampler.is_images:
    raise ValueError("config.sampling.format='png' needs images; the 2-D toy samples are "
                     "points, written as npz: use --config.sampling.format=npz.")
  num = s.num_images
  name = f'step{sampler.step}_seed{config.seed}_n{num}_batch{s.batch_size}'
  out_dir = epath.Path(workdir) / SAMPLES_DIR / name
  if jax.process_index() == 0:
    if out_dir.exists():
      out_dir.rmtree()
    out_dir.mkdir(parents=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('ddgan_jax.sample_files.out_dir')
  if not sampler.is_images:
    writer = _NpzShards(out_dir, 'samples', s.shard_size)
  elif s.format == 'npz':
    writer = _NpzShards(out_dir, 'images', s.shard_size)
  else:
    writer = _PngFiles(out_dir)
  grid_num, grid_parts = min(s.grid_images, num), []
  for start, out, count in sampler.stream(num, config.seed):
    if start < grid_num:
      grid_parts.append(sampling.gathered_rows(out, min(count, grid_num - start)))
    for first, rows in sampling.local_rows(out, count):
      writer.add(start + first, sampling.to_uint8(rows, config.model.centered)
                 if sampler.is_images else rows.astype(np.float32))
  writer.flush()
  if jax.process_index() == 0 and grid_parts:
    write_png(out_dir.parent / f'{name}.png',
              sampling.samples_picture(np.concatenate(grid_parts), config))
  logging.info('Wrote %d samples of the step-%d EMA generator to %s.', num, sampler.step, out_dir)
  return out_dir
