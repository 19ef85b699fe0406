"""TensorFlow Datasets sources: CIFAR-10, Stacked-MNIST, CelebA-HQ 256 and LSUN Church.

CIFAR-10 and MNIST fit in memory and use the resumable ``indexed`` batching. CelebA-HQ and LSUN
stream through a deterministic tf.data pipeline: each host reads its ``split_for_jax_process``
part; epoch e is shuffled with a seed drawn from (config.seed, e) and cut to
N // global_batch steps; a resume re-reads at most the current epoch's records, undecoded.
TensorFlow is imported only here, with GPUs and TPUs hidden from it.
"""

from collections.abc import Iterator, Sequence
import os
import socket

from absl import logging
import ml_collections
import numpy as np

from ddgan_jax.data import indexed
from ddgan_jax.data import local

_DOWNLOAD_HOSTS = {  # Where TFDS downloads each dataset from: (host, port).
    'cifar10': ('www.cs.toronto.edu', 443),
    'mnist': ('storage.googleapis.com', 443),
    'lsun/church_outdoor': ('dl.yf.io', 80),
}
_CELEBA_HQ_TAR = 'data256x256.tar'
_EPOCH_STREAM = 3
_NETWORK_TIMEOUT_S = 5.0
_LOAD_CHUNK = 4096


def import_tf():
  """Imports TensorFlow with GPUs and TPUs hidden, so it never takes accelerator memory."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  for kind in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], kind)
    except RuntimeError as e:
      logging.warning('Could not hide %s devices from TensorFlow: %s', kind, e)
  return tf


def _data_root(config: ml_collections.ConfigDict) -> str:
  return (
      config.data.data_dir
      or os.environ.get('TFDS_DATA_DIR')
      or os.path.expanduser('~/tensorflow_datasets')
  )


def _instructions(name: str, root: str, files: Sequence[str] = ()) -> str:
  """Says how to make TFDS dataset ``name`` available under ``root``; ``files`` its downloads."""
  build = f'tfds build {name} --data_dir={root}'
  if name.startswith('celeb_a_hq'):
    manual = _manual_dir(root)
    return (
        f'CelebA-HQ needs a manual download: make {_CELEBA_HQ_TAR} (CelebA-HQ at 256x256) with the '
        'dataset tool of https://github.com/tkarras/progressive_growing_of_gans#preparing-datasets-'
        f'for-training, put it in {manual}/, then run `{build} --manual_dir={manual}` '
        '(or set config.data.download=True).'
    )
  extra = ''
  if 'lsun' in name:
    extra = ' (downloads a 2.3 GB LMDB zip; needs `pip install tensorflow-io` to read it)'
  offline = ''
  if files:
    offline = (
        f' Offline, copy the original files ({", ".join(files)}) into '
        f'{_manual_dir(root)}/ and set config.data.download=True: they are checked against '
        "TFDS's checksums and prepared without a network."
    )
  return (
      f'Run `{build}`{extra} on a machine with network access, or copy a prepared '
      f'{name.split("/")[0]}/ folder into {root}; then set config.data.data_dir (or '
      f'$TFDS_DATA_DIR) to that folder.{offline}'
  )


def _manual_dir(root: str) -> str:
  """TFDS's default folder for files downloaded by hand: <data root>/downloads/manual."""
  return os.path.join(root, 'downloads', 'manual')


def _download_files(builder) -> list[str]:
  """The names of the files TFDS downloads to prepare ``builder`` (empty where it cannot say)."""
  return sorted(info.filename for info in (builder.url_infos or {}).values() if info.filename)


def _check_can_prepare(name: str, root: str, files: list[str]) -> None:
  """Fails at once where preparing would need files or a network that are not there.

  Where every file of ``files`` is already in the manual folder, TFDS prepares from them (after
  checking their checksums) and needs no network.
  """
  exists = import_tf().io.gfile.exists
  if name.startswith('celeb_a_hq'):
    tar = os.path.join(_manual_dir(root), _CELEBA_HQ_TAR)
    if not exists(tar):
      raise FileNotFoundError(f'{tar} not found. {_instructions(name, root)}')
    return
  if files and all(exists(os.path.join(_manual_dir(root), f)) for f in files):
    logging.info('Preparing %s from the files in %s.', name, _manual_dir(root))
    return
  host, port = _DOWNLOAD_HOSTS[name]
  try:
    socket.create_connection((host, port), timeout=_NETWORK_TIMEOUT_S).close()
  except OSError as e:
    raise ConnectionError(
        f'TFDS dataset {name!r} is not prepared in {root} and {host} cannot be reached ({e}). '
        f'{_instructions(name, root, files)}'
    ) from e


def prepared_builder(name: str, config: ml_collections.ConfigDict):
  """Returns the TFDS builder of ``name``, prepared, or raises with instructions at once."""
  import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  root = _data_root(config)
  builder = tfds.builder(name, data_dir=config.data.data_dir or None)
  if builder.is_prepared():
    return builder
  files = _download_files(builder)
  if not config.data.download:
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared under {root} and config.data.download is False. '
        f'{_instructions(name, root, files)}'
    )
  _check_can_prepare(name, root, files)
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, manual_dir=_manual_dir(root)
        )
    )
  except Exception as e:
    raise RuntimeError(
        f'Preparing TFDS dataset {name!r} failed: {e}. {_instructions(name, root, files)}'
    ) from e
  return builder


def load_split(
    name: str, config: ml_collections.ConfigDict, split: str = 'train'
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split of a small TFDS dataset: uint8 images (N, H, W, C), labels (N,)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  ds = prepared_builder(name, config).as_dataset(split=split).batch(_LOAD_CHUNK)
  chunks = list(tfds.as_numpy(ds))
  images = np.concatenate([c['image'] for c in chunks])
  return images, np.concatenate([c['label'] for c in chunks])


def cifar10_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """The 50,000 CIFAR-10 training images with their class labels; flipped if configured."""
  images, labels = load_split('cifar10', config)
  return local.array_source(images, labels, config, random_flip=config.data.random_flip)


def stackmnist_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """Stacked-MNIST: 2 x 60,000 images of three MNIST digits as R, G, B, padded 28 -> 32, no flip.

  Each channel's digits are two concatenated permutations of MNIST drawn from config.seed, so the
  three are independent. The label is 100 * d_R + 10 * d_G + d_B, one of the 1,000 modes.
  """
  digits, labels = load_split('mnist', config)
  return local.stack_three(np.pad(digits[..., 0], ((0, 0), (2, 2), (2, 2))), labels,
                           permutations=2, seed=config.seed,
                           num_examples=config.data.num_examples,
                           image_size=config.model.image_size)


def _num_train_examples(builder) -> int:
  """Size of the train split; from the dataset itself where the info has no splits (mock data)."""
  splits = builder.info.splits
  if 'train' in splits:
    return splits['train'].num_examples
  return int(builder.as_dataset(split='train').cardinality())


def streaming_batches(
    name: str, config: ml_collections.ConfigDict, shard: indexed.Shard
) -> tuple[Iterator[indexed.Batch], int]:
  """Streams a large TFDS image dataset; returns (iterator of batches, num_examples).

  Images are decoded only after the skip of a resume, resized on the shorter side to
  config.model.image_size, centre-cropped, and flipped from (config.seed, global position).
  """
  tf = import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = prepared_builder(name, config)
  total = _num_train_examples(builder)
  n = total if config.data.num_examples < 0 else min(total, config.data.num_examples)
  indexed.check_enough_examples(n, shard.global_batch)
  split = tfds.split_for_jax_process(
      'train' if n == total else f'train[:{n}]', process_index=shard.process_index,
      process_count=shard.process_count, drop_remainder=True,
  )
  b, size = shard.batch_size, config.model.image_size
  steps_per_epoch = n // shard.global_batch

  def preprocess(position, example, epoch_seed, first_step):
    image = tf.io.decode_image(example['image'], channels=3, expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.math.ceil(shape * (size / tf.reduce_min(shape))), tf.int32)
    image = tf.image.resize(image, tf.maximum(new_hw, size), method='bicubic', antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    if config.data.random_flip:
      step = first_step + position // b
      spot = step * shard.global_batch + shard.process_index * b + position % b
      coin = tf.random.stateless_uniform([], seed=tf.stack([epoch_seed, spot]))
      image = tf.cond(coin < 0.5, lambda: image[:, ::-1], lambda: image)
    return image

  def epoch_batches(epoch: int, skip_steps: int):
    rng = np.random.default_rng([_EPOCH_STREAM, epoch, config.seed & 0xFFFFFFFF])
    seed = int(rng.integers(2**31))
    ds = builder.as_dataset(
        split=split, shuffle_files=True, decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    ds = ds.shuffle(config.data.shuffle_buffer, seed=seed).take(steps_per_epoch * b).enumerate()
    ds = ds.skip(skip_steps * b).map(
        lambda i, ex: preprocess(i, ex, tf.constant(seed, tf.int64), epoch * steps_per_epoch),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return tfds.as_numpy(ds.batch(b, drop_remainder=True).prefetch(max(config.data.prefetch, 1)))

  def batches():
    epoch, skip = divmod(shard.start_step, steps_per_epoch)
    while True:
      for images in epoch_batches(epoch, skip):
        images = indexed.to_channels(images, config.model.num_channels)
        yield {'image': indexed.to_model_range(images), 'label': np.zeros(b, np.int32)}
      epoch, skip = epoch + 1, 0

  return batches(), n
