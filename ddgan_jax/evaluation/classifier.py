"""A small CNN digit classifier for scoring generated digits, trained on first use and cached.

The data are scikit-learn's 1,797 digits exactly as ``digits_source`` feeds them to training
(8x8 scaled to uint8, resized to ``image_size``, mapped to [-1, 1]). A fixed, stratified 20% of
them is held out: the classifier never trains on it, and the metrics use it as real data.

Training is deterministic given ``ClassifierSettings``, whose hash names the cache file
``<cache_dir>/digits_classifier_<hash>.npz``. An unreadable or mismatched cache file is retrained
with a warning and rewritten.
"""

import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import time

from absl import logging
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ddgan_jax.data import indexed
from ddgan_jax.data import local

NUM_CLASSES = 10
_APPLY_BATCH = 512
# Version of the training code; bump it when the training changes without a settings change.
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CNNSettings:
  """How a ``DigitCNN`` is trained: everything its parameters depend on besides the data."""

  image_size: int
  widths: tuple[int, int] = (16, 32)
  features: int = 128
  epochs: int = 20
  batch_size: int = 64
  learning_rate: float = 1e-3
  max_shift: int = 1
  seed: int = 0

  def digest(self, version: int) -> str:
    """16 hex digits of a hash of these settings and of the training code's ``version``."""
    text = json.dumps({'version': version, **dataclasses.asdict(self)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ClassifierSettings(CNNSettings):
  """Everything the digits classifier depends on; its hash names the cache file."""

  heldout_fraction: float = 0.2

  def cache_name(self) -> str:
    return f'digits_classifier_{self.digest(_VERSION)}.npz'


class DigitCNN(nn.Module):
  """Two conv-conv-pool stages, a dense feature layer and 10 logits.

  Attributes:
    widths: channels of the two stages.
    features: width of the penultimate (feature) layer.
  """

  widths: tuple[int, int]
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Maps images (N, H, W, 1) in [-1, 1] to logits (N, 10) and features (N, features)."""
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    features = nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))
    return nn.Dense(NUM_CLASSES)(features), features


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
  """scikit-learn's digits at one size, uint8 (N, S, S, 1) with int32 labels (N,)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  heldout_images: np.ndarray
  heldout_labels: np.ndarray


@functools.lru_cache(maxsize=4)
def digits_split(image_size: int, heldout_fraction: float, seed: int) -> DigitsSplit:
  """The digits as training sees them, split into a stratified, fixed held-out part."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(
      {'data': {'num_examples': -1}, 'model': {'image_size': image_size}}
  )
  source = local.digits_source(config)
  images, labels = source.load(np.arange(source.num_examples))
  train_idx, heldout_idx = model_selection.train_test_split(
      np.arange(len(labels)), test_size=heldout_fraction, stratify=labels, random_state=seed
  )
  return DigitsSplit(images[train_idx], labels[train_idx], images[heldout_idx],
                     labels[heldout_idx])


@dataclasses.dataclass(frozen=True)
class DigitClassifier:
  """A trained ``DigitCNN``.

  Attributes:
    settings: how it was trained (``ClassifierSettings`` for scikit-learn's digits,
      ``mnist_classifier.MnistSettings`` for MNIST).
    params: its parameters.
    from_cache: whether they were read from the cache rather than trained now.
  """

  settings: CNNSettings
  params: dict
  from_cache: bool

  @functools.cached_property
  def _apply(self):
    module = DigitCNN(self.settings.widths, self.settings.features)
    return jax.jit(lambda params, x: module.apply({'params': params}, x))

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and penultimate features of uint8 images.

    Args:
      images: uint8 (N, S, S, 1) with S = settings.image_size.

    Returns:
      probs: float64 (N, 10), rows sum to 1.
      features: float64 (N, settings.features).
    """
    size = self.settings.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 1):
      raise ValueError(
          f'Expected uint8 images (N, {size}, {size}, 1), got {images.dtype} {images.shape}.'
      )
    probs, features = [], []
    for start in range(0, len(images), _APPLY_BATCH):
      chunk = images[start:start + _APPLY_BATCH]
      padded = np.zeros((_APPLY_BATCH, size, size, 1), np.uint8)
      padded[:len(chunk)] = chunk
      logits, feats = self._apply(self.params, indexed.to_model_range(padded))
      probs.append(np.asarray(jax.nn.softmax(logits.astype(jnp.float32)))[:len(chunk)])
      features.append(np.asarray(feats)[:len(chunk)])
    return (np.concatenate(probs).astype(np.float64),
            np.concatenate(features).astype(np.float64))

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of uint8 images (N, S, S, 1) whose most likely class is their label (N,)."""
    return float(np.mean(self.predict(images)[0].argmax(axis=1) == labels))


def _shifted(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
  """Each image (N, H, W, C) translated by up to ``max_shift`` pixels, zero (black) filled."""
  if max_shift == 0:
    return images
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
  return np.stack([p[y:y + h, x:x + w] for p, y, x in zip(padded, dy, dx)])


def fit(settings: CNNSettings, images: np.ndarray, labels: np.ndarray) -> dict:
  """Trains a ``DigitCNN`` with Adam on shifted copies of the digits; returns its params.

  Args:
    settings: the network and its training; deterministic given these.
    images: uint8 (N, S, S, 1) with S = settings.image_size, N >= settings.batch_size.
    labels: int (N,) classes 0..9.

  Returns:
    The parameters, on the host.
  """
  module = DigitCNN(settings.widths, settings.features)
  size = settings.image_size
  params = module.init(jax.random.PRNGKey(settings.seed), jnp.zeros((1, size, size, 1)))['params']
  optimizer = optax.adam(settings.learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss_fn(p):
      logits, _ = module.apply({'params': p}, indexed.to_model_range(images))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(settings.seed)
  num_batches = len(labels) // settings.batch_size
  for _ in range(settings.epochs):
    order = rng.permutation(len(labels))
    for b in range(num_batches):
      idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
      batch = _shifted(images[idx], settings.max_shift, rng)
      params, opt_state = step(params, opt_state, batch, labels[idx])
  return jax.device_get(params)


def abstract_params(settings: CNNSettings) -> dict:
  """The shapes and dtypes (``jax.ShapeDtypeStruct``) of the params of ``settings``' network."""
  size = settings.image_size
  return jax.eval_shape(
      DigitCNN(settings.widths, settings.features).init, jax.random.PRNGKey(0),
      jnp.zeros((1, size, size, 1)),
  )['params']


def _read_params(path: pathlib.Path, settings: ClassifierSettings) -> dict:
  """Reads cached params, checking them against the shapes ``settings`` give."""
  expected = traverse_util.flatten_dict(abstract_params(settings), sep='/')
  with np.load(path) as f:
    flat = {k: f[k] for k in f.files}
  if set(flat) != set(expected) or any(
      flat[k].shape != v.shape or flat[k].dtype != v.dtype for k, v in expected.items()
  ):
    raise ValueError(f'its arrays do not match the {DigitCNN.__name__} of {settings}')
  return traverse_util.unflatten_dict(flat, sep='/')


def _write_params(path: pathlib.Path, params: dict) -> None:
  """Writes params atomically, so that a concurrent reader never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **traverse_util.flatten_dict(params, sep='/'))
  tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
  tmp.write_bytes(buf.getvalue())
  os.replace(tmp, path)


def load_or_train(settings: ClassifierSettings, cache_dir: str) -> DigitClassifier:
  """The classifier for ``settings``, from ``cache_dir`` or trained (seconds on CPU) and cached.

  Args:
    settings: the classifier's training settings.
    cache_dir: folder of cached classifiers; '~' is expanded and it is created if needed.

  Returns:
    The classifier; ``from_cache`` says whether it was read from the cache.
  """
  path = pathlib.Path(cache_dir).expanduser() / settings.cache_name()
  if path.exists():
    try:
      return DigitClassifier(settings, _read_params(path, settings), from_cache=True)
    except Exception as e:  # pylint: disable=broad-exception-caught
      logging.warning('The cached digit classifier %s is unreadable (%s: %s); retraining it.',
                      path, type(e).__name__, e)
  start = time.perf_counter()
  split = digits_split(settings.image_size, settings.heldout_fraction, settings.seed)
  params = fit(settings, split.train_images, split.train_labels)
  classifier = DigitClassifier(settings, params, from_cache=False)
  logging.info(
      'Trained the %dx%d digit classifier in %.1f s: held-out accuracy %.4f; cached at %s.',
      settings.image_size, settings.image_size, time.perf_counter() - start,
      classifier.accuracy(split.heldout_images, split.heldout_labels), path,
  )
  _write_params(path, params)
  return classifier
