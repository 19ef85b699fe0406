"""Sources that need no network: scikit-learn's digits, stacked or not, ``.npz`` arrays, folders.

Each builder returns an ``IndexedSource`` whose images already have the configured size.
"""

import concurrent.futures
import os
import pathlib

from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from ddgan_jax.data import indexed

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_EXAMPLES_SHOWN = 5
STACK_STREAM = 2  # The random stream of the digit triples (indexed.py uses 0 and 1).
STACKED_DIGITS_PERMUTATIONS = 20  # Each digit appears 20 times in each channel: 35,940 stacks.


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Scales the shorter side of ``image`` to ``size`` (bicubic), then crops the centre square."""
  w, h = image.size
  scale = size / min(w, h)
  new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BICUBIC)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return image.crop((left, top, left + size, top + size))


def resize_array(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes and centre-crops uint8 images (N, H, W, C) to (N, size, size, C)."""
  if images.shape[1:3] == (size, size):
    return images
  out = []
  for image in images:
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out.append(np.asarray(resize_center_crop(pil, size)).reshape(size, size, -1))
  return np.stack(out)


def _truncate(num_examples: int, config: ml_collections.ConfigDict) -> int:
  limit = config.data.num_examples
  return num_examples if limit < 0 else min(num_examples, limit)


def array_source(
    images: np.ndarray, labels: np.ndarray, config: ml_collections.ConfigDict, *, random_flip: bool
) -> indexed.IndexedSource:
  """Wraps in-memory uint8 images (N, H, W, C) and labels (N,), resized to the configured size."""
  n = _truncate(len(images), config)
  images = resize_array(images[:n], config.model.image_size)
  labels = np.asarray(labels[:n], np.int32)
  return indexed.IndexedSource(
      num_examples=n, load=lambda idx: (images[idx], labels[idx]), random_flip=random_flip
  )


def _sklearn_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's 1,797 8x8 digits scaled to uint8 and resized: (N, S, S, 1), labels (N,)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return resize_array(images, image_size), digits.target


def digits_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """The 1,797 8x8 handwritten digits shipped with scikit-learn (grayscale, labels 0-9, no flip)."""
  images, labels = _sklearn_digits(config.model.image_size)
  return array_source(images, labels, config, random_flip=False)


def stack_three(
    digits: np.ndarray, labels: np.ndarray, *, permutations: int, seed: int, num_examples: int,
    image_size: int,
) -> indexed.IndexedSource:
  """Stacks of three grey digits as R, G, B, as Stacked-MNIST builds them; no flip.

  Channel c of the stacks is ``permutations`` concatenated permutations of the N digits, drawn
  from ``seed`` (stream ``STACK_STREAM``) one channel after the other, so the three channels are
  independent and each digit appears ``permutations`` times in each. The label is
  100 * d_R + 10 * d_G + d_B: one of the 1,000 modes.

  Args:
    digits: uint8 (N, H, W) grey digits.
    labels: (N,) their classes, 0..9.
    permutations: permutations of the digits per channel.
    seed: the seed the triples are drawn from (config.seed).
    num_examples: keep the first this many stacks; -1 keeps all permutations * N.
    image_size: the stacks are resized to image_size x image_size (unchanged if H = W = it).

  Returns:
    A source of uint8 (n, image_size, image_size, 3) stacks and int32 labels (n,).
  """
  n = len(digits)
  rng = np.random.default_rng([STACK_STREAM, seed & 0xFFFFFFFF])
  triples = np.stack(
      [np.concatenate([rng.permutation(n) for _ in range(permutations)]) for _ in range(3)],
      axis=1,
  )
  triples = triples if num_examples < 0 else triples[:num_examples]

  def load(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = triples[idx]
    images = np.stack([digits[t[:, c]] for c in range(3)], axis=-1)
    modes = 100 * labels[t[:, 0]] + 10 * labels[t[:, 1]] + labels[t[:, 2]]
    return resize_array(images, image_size), modes.astype(np.int32)

  return indexed.IndexedSource(num_examples=len(triples), load=load, random_flip=False)


def stacked_digits_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """Stacked digits: three of scikit-learn's digits as R, G, B, drawn from config.seed; no flip.

  The channels are the images of ``digits_source`` at config.model.image_size, stacked by
  ``stack_three`` (each digit ``STACKED_DIGITS_PERMUTATIONS`` times per channel: 35,940 stacks).
  The label is the mode, 100 * d_R + 10 * d_G + d_B.
  """
  images, labels = _sklearn_digits(config.model.image_size)
  return stack_three(images[..., 0], labels, permutations=STACKED_DIGITS_PERMUTATIONS,
                     seed=config.seed, num_examples=config.data.num_examples,
                     image_size=config.model.image_size)


def _npz_images(path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """Reads uint8 images (N, H, W, C) and optional labels (N,) from an ``.npz`` file."""
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f'config.data.path={path!r} is not a file. For dataset "npz" set it to an .npz file '
        "holding uint8 images (N, H, W, C) or (N, H, W), e.g. np.savez('x.npz', images=x)."
    )
  with np.load(path) as arrays:
    contents = {k: arrays[k] for k in arrays.files}
  candidates = [k for k in ('images', 'image', 'x') if k in contents] or [
      k for k, v in contents.items() if v.dtype == np.uint8 and v.ndim in (3, 4)
  ]
  if len(candidates) != 1:
    raise ValueError(
        f'{path} holds {sorted((k, v.dtype.name, v.shape) for k, v in contents.items())}; '
        "expected exactly one uint8 image array (N, H, W, C) or (N, H, W), best named 'images'."
    )
  images = contents[candidates[0]]
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(
        f'{path}: array {candidates[0]!r} is {images.dtype} {images.shape}; it must be uint8 '
        'NHWC with 1, 3 or 4 channels (or N, H, W grayscale). Convert NCHW or [0, 1] floats first.'
    )
  labels = next((contents[k] for k in ('labels', 'label', 'y') if k in contents), None)
  if labels is not None and labels.shape != (len(images),):
    raise ValueError(f'{path}: labels have shape {labels.shape}, expected ({len(images)},).')
  return images, labels


def npz_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """uint8 images from ``config.data.path`` (.npz); labels from a 'labels' array if present."""
  images, labels = _npz_images(config.data.path)
  if labels is None:
    labels = np.zeros(len(images), np.int32)
  return array_source(images, labels, config, random_flip=config.data.random_flip)


def _is_readable(path: pathlib.Path) -> bool:
  try:
    with Image.open(path) as image:
      return image.size[0] > 0 and image.size[1] > 0
  except _UNREADABLE:
    return False


def _decode(path: pathlib.Path, size: int) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(resize_center_crop(image.convert('RGB'), size))


def image_folder_source(config: ml_collections.ConfigDict) -> indexed.IndexedSource:
  """Every JPEG/PNG under ``config.data.path`` (recursively), as RGB, resized and centre-cropped.

  Files that cannot be opened are skipped with one warning that counts them. A file that opens but
  fails to decode later (e.g. a truncated JPEG) is replaced by the next file in sorted order, with a
  warning, so a long run never crashes and stays deterministic.
  """
  root = pathlib.Path(config.data.path or '')
  if not config.data.path or not root.is_dir():
    raise FileNotFoundError(
        f'config.data.path={config.data.path!r} is not a directory. For dataset "image_folder" '
        f'set it to a folder that holds images ({", ".join(IMAGE_SUFFIXES)}, any depth).'
    )
  files = sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
  if not files:
    raise FileNotFoundError(
        f'No {"/".join(IMAGE_SUFFIXES)} files under {root}. Put the training images there '
        '(sub-folders are fine) or point config.data.path elsewhere.'
    )
  workers = min(32, 4 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    readable = list(pool.map(_is_readable, files))
  bad = [f for f, ok in zip(files, readable) if not ok]
  if bad:
    logging.warning(
        'Skipping %d of %d files under %s that are not readable images, e.g. %s.',
        len(bad), len(files), root, ', '.join(str(f) for f in bad[:_EXAMPLES_SHOWN]),
    )
  files = [f for f, ok in zip(files, readable) if ok]
  if not files:
    raise ValueError(f'None of the image files under {root} can be read; check the folder.')
  files = files[:_truncate(len(files), config)]
  size = config.model.image_size
  decode_pool = concurrent.futures.ThreadPoolExecutor(workers)

  def decode_or_next(index: int) -> np.ndarray:
    for offset in range(len(files)):
      path = files[(index + offset) % len(files)]
      try:
        return _decode(path, size)
      except _UNREADABLE as e:
        logging.warning('Cannot decode %s (%s); using the next image in its place.', path, e)
    raise ValueError(f'None of the {len(files)} images under {root} can be decoded.')

  def load(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack(list(decode_pool.map(decode_or_next, idx.tolist())))
    return images, np.zeros(len(idx), np.int32)

  return indexed.IndexedSource(
      num_examples=len(files), load=load, random_flip=config.data.random_flip
  )
