"""Input pipelines: one entry point, ``create_dataset``, over a registry of sources.

``config.data.dataset`` picks a builder from ``DATASETS``:
  'cifar10'        TFDS cifar10 train split (50,000), class labels, random flip.
  'stackmnist'     three independent TFDS mnist digits as R, G, B, padded 28 -> 32 (120,000), no
                   flip, label 100 * d_R + 10 * d_G + d_B.
  'celeba_hq_256'  TFDS celeb_a_hq/256 (manual download; the error says what to fetch), flip.
  'lsun_church'    TFDS lsun/church_outdoor, resized and centre-cropped, flip; the paper used the
                   first 120,000 images (config.data.num_examples).
  'image_folder'   every JPEG/PNG under config.data.path, as RGB, resized and centre-cropped.
  'npz'            a uint8 image array (N, H, W, C) or (N, H, W) in the .npz file config.data.path.
  'digits'         scikit-learn's 1,797 8x8 digits resized to the image size: needs no network.
  'stacked_digits' three of those digits as R, G, B (35,940 stacks drawn from config.seed), no
                   flip, label 100 * d_R + 10 * d_G + d_B: Stacked-MNIST with no network.
  'toy2d'          2-D mixture of Gaussians config.data.toy (``ddgan_jax.toy2d.toy_batches``).

A builder has the signature

    builder(config: ConfigDict, shard: Shard) -> (Iterator[dict[str, np.ndarray]], int)

and returns an endless iterator of this host's batches, from global step ``shard.start_step`` on,
plus the number of training examples over all hosts. Image builders yield
{'image': float32 (shard.batch_size, H, W, C) in [-1, 1], 'label': int32 (shard.batch_size,)};
other sources may yield other shapes (2-D points: 'image' float32 (B, 2)). Register a new source
with ``DATASETS['name'] = builder``. ``create_dataset`` validates the batch, the host and the image
size before any builder runs. Sources that can index their examples should return
``IndexedSource`` from a ``config -> IndexedSource`` function wrapped by ``from_indexed``: that
gives deterministic, cheaply resumable batches (see ``ddgan_jax.data.indexed``).
"""

from collections.abc import Callable, Iterator

import jax
import ml_collections

from ddgan_jax import models
from ddgan_jax import toy2d
from ddgan_jax.data import indexed
from ddgan_jax.data import local
from ddgan_jax.data import tfds_sources

Batch = indexed.Batch
Shard = indexed.Shard
IndexedSource = indexed.IndexedSource
Builder = Callable[[ml_collections.ConfigDict, Shard], tuple[Iterator[Batch], int]]


def from_indexed(make_source: Callable[[ml_collections.ConfigDict], IndexedSource]) -> Builder:
  """Turns a function ``config -> IndexedSource`` into a registry builder."""

  def build(config: ml_collections.ConfigDict, shard: Shard) -> tuple[Iterator[Batch], int]:
    source = make_source(config)
    indexed.check_enough_examples(source.num_examples, shard.global_batch)
    batches = indexed.indexed_batches(
        source, shard, seed=config.seed, num_channels=config.model.num_channels,
        prefetch=config.data.prefetch,
    )
    return batches, source.num_examples

  return build


def _streaming(tfds_name: str) -> Builder:
  return lambda config, shard: tfds_sources.streaming_batches(tfds_name, config, shard)


DATASETS: dict[str, Builder] = {
    'cifar10': from_indexed(tfds_sources.cifar10_source),
    'stackmnist': from_indexed(tfds_sources.stackmnist_source),
    'celeba_hq_256': _streaming('celeb_a_hq/256'),
    'lsun_church': _streaming('lsun/church_outdoor'),
    'image_folder': from_indexed(local.image_folder_source),
    'npz': from_indexed(local.npz_source),
    'digits': from_indexed(local.digits_source),
    'stacked_digits': from_indexed(local.stacked_digits_source),
    'toy2d': toy2d.toy_batches,
}


def check_global_batch(config: ml_collections.ConfigDict, num_devices: int,
                       num_processes: int) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  b = config.training.batch_size
  if b <= 0 or b % num_devices or b % num_processes:
    raise ValueError(
        f'config.training.batch_size={b} (the global batch) must be a positive multiple of the '
        f'device count ({num_devices}) and of the process count ({num_processes}); e.g. use '
        f'{num_devices * max(1, b // num_devices)}.'
    )


def create_dataset(
    config: ml_collections.ConfigDict,
    *,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[Iterator[Batch], int]:
  """Creates this host's training batches.

  Args:
    config: the full configuration (seed, training.batch_size, model.*, data.*).
    start_step: global step of the first batch; a run resumed from step N passes N and gets the
      batches an uninterrupted run would have seen from there on.
    process_index: this host; defaults to ``jax.process_index()``.
    process_count: number of hosts; defaults to ``jax.process_count()``.

  Returns:
    (iterator, num_examples): an endless iterator of dicts {'image': float32
    (batch_size // process_count, H, W, num_channels) in [-1, 1], 'label': int32
    (batch_size // process_count,)}, and the number of training examples over all hosts (after
    config.data.num_examples).

  Raises:
    ValueError: unknown dataset, a batch size the devices or hosts cannot split, a bad host index
      or start step, or an image size the networks cannot take.
    FileNotFoundError, ConnectionError, RuntimeError: the data is missing; the message says how to
      provide it.
  """
  name = config.data.dataset
  if name not in DATASETS:
    raise ValueError(
        f'Unknown config.data.dataset={name!r}; known datasets: {", ".join(sorted(DATASETS))}.'
    )
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index={process_index} is outside [0, process_count={process_count}).'
    )
  check_global_batch(config, jax.device_count(), process_count)
  global_batch = config.training.batch_size
  if start_step < 0:
    raise ValueError(f'start_step={start_step} must be >= 0.')
  models.check_image_size(config)
  shard = Shard(start_step, process_index, process_count, global_batch)
  return DATASETS[name](config, shard)
