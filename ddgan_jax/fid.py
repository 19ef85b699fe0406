r"""FID with pytorch-fid's network and habits, in JAX: convert its weights, write statistics, compare.

  python -m ddgan_jax.fid convert --checkpoint=pt_inception-2015-12-05-6726825d.pth \
      --out=fid_inception.npz
  python -m ddgan_jax.fid stats --inception=fid_inception.npz --images=PATH --out=STATS.npz
  python -m ddgan_jax.fid distance A B [--inception=fid_inception.npz]

``convert`` turns pytorch-fid's ``.pth`` (needs torch) into a ``.npz`` that needs numpy only.
``stats`` writes pytorch-fid's ``mu`` and ``sigma`` (float64) of the pool3 features of PATH: a
``.npz`` holding uint8 ``images`` (N, H, W, C), grey (C = 1) or RGB, or a folder of PNG/JPEG files
(read as RGB, in sorted order). All images of a source must share one size; they are resized to
299 x 299 as pytorch-fid does. ``distance`` prints the FID between A and B, each a statistics
``.npz`` (``mu``, ``sigma``; pytorch-fid's files work) or an image source.

Without --inception the weights are looked for in --cache_dir, then downloaded from pytorch-fid's
release URL (see ``ddgan_jax.evaluation.inception_weights.locate``).
"""

import io
import os

from absl import app
from absl import flags
from absl import logging
from etils import epath
import numpy as np
from PIL import Image

from ddgan_jax import sampling
from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_metrics
from ddgan_jax.evaluation import inception_weights

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
COMMANDS = ('convert', 'stats', 'distance')

FLAGS = flags.FLAGS


def convert(checkpoint: str, out: str) -> None:
  """Converts pytorch-fid's ``.pth`` to the torch-free weights ``.npz``."""
  inception_weights.save(inception_weights.load_torch_file(checkpoint), out)


def load_images(path: str) -> np.ndarray:
  """uint8 images (N, H, W, C) of a ``.npz`` (key ``images``) or of a folder of PNG/JPEG files.

  Raises:
    ValueError: the path is neither, holds no images, or its images differ in size or type.
  """
  source = epath.Path(path)
  if source.is_dir():
    files = sorted(f for f in source.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise ValueError(f'The folder {path} holds no {"/".join(IMAGE_EXTENSIONS)} files.')
    arrays = [np.asarray(Image.open(io.BytesIO(f.read_bytes())).convert('RGB')) for f in files]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
      raise ValueError(f'The images of {path} differ in size ({sorted(sizes)}); resize them to '
                       'one size first.')
    return np.stack(arrays)
  if source.suffix != '.npz' or not source.exists():
    raise ValueError(f'{path} is neither a folder of images nor an existing .npz file.')
  with source.open('rb') as f:
    data = np.load(io.BytesIO(f.read()))
    if 'images' not in data.files:
      raise ValueError(f'{path} has no `images` array (it holds {data.files}).')
    images = data['images']
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'The `images` of {path} must be uint8 (N, H, W, C) with C = 1 or 3, got '
                     f'{images.dtype} {images.shape}.')
  return images


def make_features_fn(inception_path: str | None, cache_dir: str, dtype: str, batch_size: int,
                     weights_url: str = inception_weights.FID_WEIGHTS_URL):
  """The sharded Inception forward over all devices with the weights ``locate`` finds."""
  weights = inception_weights.locate(inception_path, cache_dir, weights_url)
  variables = inception_weights.load_any(weights)
  return inception.make_features_fn(variables, sampling.make_mesh(), dtype, batch_size)


def read_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``mu`` and ``sigma`` (float64) of a statistics ``.npz`` (ours or pytorch-fid's)."""
  with epath.Path(path).open('rb') as f:
    data = np.load(io.BytesIO(f.read()))
    if 'mu' not in data.files or 'sigma' not in data.files:
      raise ValueError(f'{path} is no statistics file: it lacks `mu` or `sigma` (it holds '
                       f'{data.files}).')
    return np.asarray(data['mu'], np.float64), np.asarray(data['sigma'], np.float64)


def write_statistics(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
  buf = io.BytesIO()
  np.savez(buf, mu=mu, sigma=sigma)
  epath.Path(path).write_bytes(buf.getvalue())


def is_statistics_file(path: str) -> bool:
  """Whether ``path`` is a ``.npz`` with ``mu`` and ``sigma`` (else it should be an image source)."""
  source = epath.Path(path)
  if source.suffix != '.npz' or not source.exists():
    return False
  with source.open('rb') as f:
    return {'mu', 'sigma'} <= set(np.load(io.BytesIO(f.read())).files)


def _features_fn_from_flags():
  return make_features_fn(FLAGS.inception, FLAGS.cache_dir, FLAGS.dtype, FLAGS.batch_size,
                          FLAGS.weights_url)


def _statistics(path: str, features_fn) -> tuple[np.ndarray, np.ndarray]:
  images = load_images(path)
  logging.info('Computing Inception features of %d images (%s) from %s.', len(images),
               'x'.join(map(str, images.shape[1:])), path)
  return inception_metrics.feature_statistics(features_fn(images)[0])


def main(argv):
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'Give a command: one of {", ".join(COMMANDS)} (see --helpfull).')
  command, args = argv[1], argv[2:]
  if command == 'convert':
    if args or not FLAGS.checkpoint or not FLAGS.out:
      raise app.UsageError('Usage: convert --checkpoint=PTH --out=WEIGHTS.npz')
    convert(FLAGS.checkpoint, FLAGS.out)
    logging.info('Wrote %s; pass it as --inception.', FLAGS.out)
  elif command == 'stats':
    if args or not FLAGS.images or not FLAGS.out:
      raise app.UsageError('Usage: stats --images=NPZ_OR_FOLDER --out=STATS.npz [--inception=...]')
    write_statistics(FLAGS.out, *_statistics(FLAGS.images, _features_fn_from_flags()))
    logging.info('Wrote the statistics of %s to %s.', FLAGS.images, FLAGS.out)
  else:
    if len(args) != 2:
      raise app.UsageError('Usage: distance A B, each a statistics .npz or an image source.')
    features_fn = None
    stats = []
    for path in args:
      if is_statistics_file(path):
        stats.append(read_statistics(path))
        continue
      if not os.path.exists(os.path.expanduser(path)):
        raise app.UsageError(f'{path} does not exist.')
      features_fn = features_fn or _features_fn_from_flags()
      stats.append(_statistics(path, features_fn))
    print(f'FID: {inception_metrics.frechet_distance(*stats[0], *stats[1]):.6f}')


if __name__ == '__main__':
  flags.DEFINE_string('checkpoint', None, "convert: pytorch-fid's pt_inception-2015-12-05-*.pth.")
  flags.DEFINE_string('out', None, 'convert: the weights .npz to write; stats: the statistics .npz.')
  flags.DEFINE_string('images', None, 'stats: a .npz with uint8 `images` (N, H, W, C) or a folder '
                      'of PNG/JPEG files.')
  flags.DEFINE_string('inception', None, 'The converted weights (.npz) or the .pth (needs torch); '
                      'default: look in --cache_dir, then download.')
  flags.DEFINE_string('cache_dir', '~/.cache/ddgan_jax', 'Where downloaded and converted weights '
                      'are kept.')
  flags.DEFINE_string('weights_url', inception_weights.FID_WEIGHTS_URL,
                      'Where the .pth is downloaded from when the cache lacks it.')
  flags.DEFINE_enum('dtype', 'float32', sorted(inception.DTYPES), 'The Inception compute dtype.')
  flags.DEFINE_integer('batch_size', 200, 'Images per Inception forward pass (all devices).')
  app.run(main)
