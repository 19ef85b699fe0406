"""The metric family of image datasets: FID, Inception Score and precision/recall, as pytorch-fid.

``score`` runs the FID Inception (``inception.py``) on the uint8 samples and reports
  * fid: the Fréchet distance (float64) between the samples' pool3 statistics and the reference's;
  * inception_score: mean and std over 10 splits of the 1008-way softmax;
  * precision and recall: improved precision/recall (k = 3) of the samples' pool3 features against
    as many reference images' features (the DDGAN paper's recall used VGG-16 features instead).

The reference is ``config.eval.fid_reference`` when set: a statistics ``.npz`` with ``mu`` and
``sigma`` (pytorch-fid's files work), which carries no features, so precision and recall are then
not computed. Otherwise it is computed once through the project's input pipeline (every training
image in dataset order, no flips, uint8 at the configured size and channels) and cached in
``config.eval.cache_dir`` under a name holding the dataset, split, resolution, number of images,
Inception dtype and a digest of the weights file; the cache holds ``mu``, ``sigma`` and the
float32 ``features``. The streaming datasets (celeba_hq_256, lsun_church) need
``config.eval.fid_reference``. Stacked-MNIST is scored by its modes instead (``stacked_mnist.py``);
for its FID, write samples with --mode=sample and compare them with ``python -m ddgan_jax.fid``.
During training (``training_metric``) only the FID is computed.

Any number of processes may score: the samples stay on the devices, the Inception runs on all of
them, and every process computes the metrics from all the features.
"""

from collections.abc import Callable
import hashlib
import io
import os

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from ddgan_jax import sampling
from ddgan_jax.data import indexed
from ddgan_jax.data import local
from ddgan_jax.data import tfds_sources
from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_metrics
from ddgan_jax.evaluation import inception_weights

INDEXED_SOURCES = {
    'cifar10': tfds_sources.cifar10_source,
    'image_folder': local.image_folder_source,
    'npz': local.npz_source,
}
STREAMING_DATASETS = ('celeba_hq_256', 'lsun_church')
_DIGEST_CHARS = 8


def _digest(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def _weights(config: ml_collections.ConfigDict) -> epath.Path:
  return inception_weights.locate(config.eval.inception_weights or None, config.eval.cache_dir)


def _features_fn(config: ml_collections.ConfigDict, weights: epath.Path, mesh: jax.sharding.Mesh):
  return inception.make_features_fn(inception_weights.load_any(weights), mesh,
                                    config.eval.inception_dtype, config.eval.inception_batch_size)


def reference_cache_name(config: ml_collections.ConfigDict, num_images: int, weights: bytes) -> str:
  """The cache file name of the reference statistics of ``config``'s training set."""
  dataset = config.data.dataset
  if dataset in ('image_folder', 'npz'):
    dataset += '-' + _digest(os.path.abspath(config.data.path).encode())
  m = config.model
  return (f'fid_ref_{dataset}_train_{m.image_size}x{m.image_size}x{m.num_channels}_n{num_images}'
          f'_{config.eval.inception_dtype}_inception-{_digest(weights)}.npz')


def _on_every_process(flag: bool) -> bool:
  """Whether ``flag`` holds on every process."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.asarray(flag)).all())


def reference_statistics(
    config: ml_collections.ConfigDict, features_fn, weights: epath.Path
) -> tuple[dict, str]:
  """The reference's mu, sigma and (when computed here) features, and where they came from.

  Every process takes part (the Inception forward is collective) and gets the same statistics.
  The cache is read only when every process sees it, so a ``config.eval.cache_dir`` on each
  host's own disk is computed again; process 0 writes it.

  Args:
    config: the run's config.
    features_fn: ``inception.make_features_fn``'s function for the same weights and dtype.
    weights: the Inception weights file (its digest names the cache).

  Returns:
    ({'mu', 'sigma', 'features' (None for a given statistics file)}, the file's path).
  """
  if config.eval.fid_reference:
    with epath.Path(config.eval.fid_reference).open('rb') as f:
      data = np.load(io.BytesIO(f.read()))
      return ({'mu': data['mu'], 'sigma': data['sigma'], 'features': None},
              config.eval.fid_reference)
  source = INDEXED_SOURCES[config.data.dataset](config)
  path = (epath.Path(os.path.expanduser(config.eval.cache_dir))
          / reference_cache_name(config, source.num_examples, weights.read_bytes()))
  if _on_every_process(path.exists()):
    with path.open('rb') as f:
      data = np.load(io.BytesIO(f.read()))
      return {k: data[k] for k in ('mu', 'sigma', 'features')}, str(path)
  logging.info('Computing the FID reference features of %d training images; cached as %s.',
               source.num_examples, path)
  chunk = 10 * config.eval.inception_batch_size
  features = []
  for start in range(0, source.num_examples, chunk):
    images, _ = source.load(np.arange(start, min(start + chunk, source.num_examples)))
    features.append(features_fn(indexed.to_channels(images, config.model.num_channels))[0])
  features = np.concatenate(features)
  mu, sigma = inception_metrics.feature_statistics(features)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, features=features)
    path.write_bytes(buf.getvalue())
  return {'mu': mu, 'sigma': sigma, 'features': features}, str(path)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling: grey or RGB images, a reference, Inception weights at hand."""
  if config.model.num_channels not in (1, 3):
    raise ValueError(f'The Inception takes grey or RGB images, got config.model.num_channels='
                     f'{config.model.num_channels}.')
  reference = config.eval.fid_reference
  if reference and not epath.Path(reference).exists():
    raise FileNotFoundError(f'config.eval.fid_reference={reference!r} does not exist.')
  if not reference and config.data.dataset not in INDEXED_SOURCES:
    raise ValueError(
        f'The FID reference of {config.data.dataset!r} cannot be computed here (it streams); set '
        'config.eval.fid_reference to a statistics .npz (mu, sigma), e.g. pytorch-fid\'s, or '
        'one written by: python -m ddgan_jax.fid stats --images=... --out=...')
  _weights(config)


def score(
    config: ml_collections.ConfigDict, samples: np.ndarray | jax.Array, out_dir: epath.Path,
    step: int
) -> dict:
  """FID, Inception Score and precision/recall of uint8 samples (N, H, W, C), N >= 10.

  The samples are a global jax.Array on every device (``common.to_scoring_range``), or numpy; the
  Inception runs on all devices and every process computes the metrics from all the features.

  Returns:
    {'fid', 'inception_score': {'mean', 'std', 'splits'}, 'precision', 'recall' and
     'num_reference_features' (None without reference features), 'reference_statistics' (the
     file), 'inception': {'weights', 'dtype'}, 'recall_features': what P/R ran on}.
  """
  del out_dir, step
  weights = _weights(config)
  features_fn = _features_fn(config, weights, sampling.make_mesh())
  pool3, logits = features_fn(samples)
  reference, reference_file = reference_statistics(config, features_fn, weights)
  fid = inception_metrics.frechet_distance(*inception_metrics.feature_statistics(pool3),
                                           reference['mu'], reference['sigma'])
  is_mean, is_std = inception_metrics.inception_score(logits, splits=10)
  precision = recall = None
  if reference['features'] is not None:
    precision, recall = inception_metrics.precision_recall(reference['features'][:len(pool3)],
                                                           pool3, k=3)
  return {
      'fid': fid,
      'inception_score': {'mean': is_mean, 'std': is_std, 'splits': 10},
      'precision': precision,
      'recall': recall,
      'num_reference_features': (None if reference['features'] is None
                                 else int(min(len(reference['features']), len(pool3)))),
      'reference_statistics': reference_file,
      'inception': {'weights': str(weights), 'dtype': config.eval.inception_dtype},
      'recall_features': 'Inception pool3, k = 3 (the DDGAN paper used VGG-16 features)',
  }


def training_metric(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[str, Callable[[np.ndarray | jax.Array], float]]:
  """('fid', the FID of uint8 samples against the reference), for evaluation during training.

  The weights and the reference statistics are loaded (or computed and cached) here, once; the
  Inception forward over ``mesh`` compiles on its first batch and is reused after. The samples
  are a global jax.Array on ``mesh`` (or numpy), and every process returns the same FID.
  """
  weights = _weights(config)
  features_fn = _features_fn(config, weights, mesh)
  reference, reference_file = reference_statistics(config, features_fn, weights)
  logging.info('FID during training against %s.', reference_file)
  mu, sigma = reference['mu'], reference['sigma']

  def fid(samples: np.ndarray | jax.Array) -> float:
    pool3, _ = features_fn(samples)
    return inception_metrics.frechet_distance(*inception_metrics.feature_statistics(pool3), mu,
                                              sigma)

  return 'fid', fid


def summary(metrics: dict) -> str:
  """A one-line account of ``score``'s metrics, for logs."""
  line = (f'FID {metrics["fid"]:.3f}, IS {metrics["inception_score"]["mean"]:.3f} '
          f'± {metrics["inception_score"]["std"]:.3f}')
  if metrics['precision'] is not None:
    line += f', precision {metrics["precision"]:.3f}, recall {metrics["recall"]:.3f}'
  return line + f' (reference {metrics["reference_statistics"]})'
