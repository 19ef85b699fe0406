"""Deterministic, resumable batching of any source with random access by example index.

The global batch stream depends only on the seed and the dataset size:
  epoch e visits ``permutation(seed, e)`` of the N examples in order, in steps_per_epoch = N // B
  batches of the global batch B (the last N % B examples of each epoch's order are dropped);
  global step s is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``; its horizontal
  flips are drawn from (seed, s). Host p of P reads rows [p * B / P, (p + 1) * B / P) of each global
  batch. So the hosts read disjoint parts that together make the whole batch, resuming at step N
  costs one permutation, and the stream does not change with the number of hosts.
"""

from collections.abc import Callable, Iterator
import collections
import concurrent.futures
import dataclasses
import functools

import numpy as np

Batch = dict[str, np.ndarray]
# Maps example indices (n,) to (uint8 images (n, H, W, C), int32 labels (n,)).
LoadFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

_PERMUTATION_STREAM = 0
_FLIP_STREAM = 1
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as PIL's RGB -> 'L'.


@dataclasses.dataclass(frozen=True)
class Shard:
  """The part of the global batch stream that one host reads.

  Attributes:
    start_step: first global step to produce (0 for a fresh run, N after a resume from step N).
    process_index: this host, in [0, process_count).
    process_count: number of hosts.
    global_batch: examples per step over all hosts; a multiple of process_count.
  """

  start_step: int
  process_index: int
  process_count: int
  global_batch: int

  @property
  def batch_size(self) -> int:
    """Examples per step on this host."""
    return self.global_batch // self.process_count


@dataclasses.dataclass(frozen=True)
class IndexedSource:
  """A dataset with random access by example index.

  Attributes:
    num_examples: N, the number of examples.
    load: maps indices (n,) in [0, N) to uint8 images (n, H, W, C) and int32 labels (n,).
    random_flip: whether to flip images horizontally at random.
  """

  num_examples: int
  load: LoadFn
  random_flip: bool


def _seed_words(seed: int) -> list[int]:
  return [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """Returns the visiting order (num_examples,) of the given epoch."""
  rng = np.random.default_rng([_PERMUTATION_STREAM, epoch, *_seed_words(seed)])
  return rng.permutation(num_examples)


def global_step_examples(
    seed: int, step: int, num_examples: int, global_batch: int
) -> tuple[np.ndarray, np.ndarray]:
  """Returns the example indices (B,) and flip decisions (B,) bool of one global step."""
  steps_per_epoch = num_examples // global_batch
  epoch, k = divmod(step, steps_per_epoch)
  indices = epoch_permutation(seed, epoch, num_examples)[k * global_batch:(k + 1) * global_batch]
  flips = np.random.default_rng([_FLIP_STREAM, step, *_seed_words(seed)]).random(global_batch) < 0.5
  return indices, flips


def check_enough_examples(num_examples: int, global_batch: int) -> None:
  """Raises ValueError unless one global batch fits in the dataset."""
  if num_examples < global_batch:
    raise ValueError(
        f'The dataset has {num_examples} examples, fewer than config.training.batch_size='
        f'{global_batch}; lower the batch size or add data (check config.data.num_examples).'
    )


def to_channels(images: np.ndarray, num_channels: int) -> np.ndarray:
  """Converts uint8 images (n, H, W, C) with C in {1, 3, 4} to (n, H, W, num_channels).

  Grayscale is repeated to RGB, RGB becomes luminance for one channel, and alpha is dropped.
  """
  if images.shape[-1] == 4:
    images = images[..., :3]
  c = images.shape[-1]
  if c == num_channels:
    return images
  if c == 1 and num_channels == 3:
    return np.repeat(images, 3, axis=-1)
  if c == 3 and num_channels == 1:
    luma = images.astype(np.float32) @ _LUMA
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
  raise ValueError(
      f'Cannot turn {c}-channel images into config.model.num_channels={num_channels}; '
      'use 1 (grayscale) or 3 (RGB).'
  )


def to_model_range(images: np.ndarray) -> np.ndarray:
  """Maps uint8 images to float32 in [-1, 1]."""
  return images.astype(np.float32) / 127.5 - 1.0


def indexed_batches(
    source: IndexedSource, shard: Shard, *, seed: int, num_channels: int, prefetch: int
) -> Iterator[Batch]:
  """Yields this host's batches of the global stream, from global step shard.start_step on.

  Args:
    source: the dataset.
    shard: which steps and which rows of each global batch to produce.
    seed: the config seed; the only source of randomness.
    num_channels: channels of the produced images.
    prefetch: batches prepared ahead in background threads; 0 prepares each on demand.

  Yields:
    {'image': float32 (shard.batch_size, H, W, num_channels) in [-1, 1],
     'label': int32 (shard.batch_size,)}.
  """
  lo = shard.process_index * shard.batch_size
  hi = lo + shard.batch_size

  def make_batch(step: int) -> Batch:
    indices, flips = global_step_examples(seed, step, source.num_examples, shard.global_batch)
    images, labels = source.load(indices[lo:hi])
    images = to_channels(images, num_channels)
    if source.random_flip:
      images = np.where(flips[lo:hi, None, None, None], images[:, :, ::-1], images)
    return {'image': to_model_range(images), 'label': np.asarray(labels, np.int32)}

  step = shard.start_step
  if prefetch <= 0:
    while True:
      yield make_batch(step)
      step += 1
  with concurrent.futures.ThreadPoolExecutor(max_workers=prefetch) as pool:
    pending = collections.deque()
    while True:
      while len(pending) <= prefetch:
        pending.append(pool.submit(make_batch, step))
        step += 1
      yield pending.popleft().result()
