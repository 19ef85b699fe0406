"""The FID InceptionV3 in Flax (NHWC): pytorch-fid's network, its input handling and a sharded forward.

This is the port of the TensorFlow 2015-12-05 Inception graph that TTUR, pytorch-fid and the DDGAN
paper measure FID with. Module and parameter names follow the PyTorch state dict of pytorch-fid's
``fid_inception_v3()`` (``Mixed_5b.branch1x1.conv.weight`` is ``Mixed_5b/branch1x1/conv/kernel``),
so ``inception_weights`` converts its ``.pth`` file key by key. The FID blocks differ from
torchvision's Inception: the average pools of the A, C and first E blocks leave the padding out of
the mean (``count_include_pad=False``), and the last E block max-pools its pool branch.

Input handling is pytorch-fid's: uint8 images become floats in [0, 1] (x / 255), are resized
bilinearly to 299 x 299 as ``F.interpolate(mode='bilinear', align_corners=False)`` does, and are
scaled to [-1, 1]. Grey images are repeated to three channels.
"""

from collections.abc import Callable, Iterator
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_LOGITS = 1008
_BN_EPSILON = 1e-3
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _source_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Both source indices and the second one's weight of each output pixel, as torch computes them.

  The source coordinate of output pixel i is (i + 0.5) * in / out - 0.5, clamped at 0. torch
  computes it in float32 with one fused multiply-add (rounded once), from the float32 ratio
  in / out; float64 reproduces that exactly, since the product is exact there.
  """
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0.0))
  low = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  weight = np.clip(src - low.astype(np.float32), 0.0, 1.0).astype(np.float32)
  return low, high, weight


def _interpolate_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  low, high, weight = _source_taps(x.shape[axis], out_size)
  shape = [1] * x.ndim
  shape[axis] = out_size
  weight = jnp.asarray(weight).reshape(shape)
  return (jnp.take(x, jnp.asarray(low), axis=axis) * (1.0 - weight)
          + jnp.take(x, jnp.asarray(high), axis=axis) * weight)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of float32 images, equal to torch's F.interpolate(align_corners=False).

  Args:
    x: (N, H, W, C) float32.
    height, width: the output size.

  Returns:
    (N, height, width, C) float32; each output is two-tap interpolated along W, then along H.
  """
  return _interpolate_axis(_interpolate_axis(x, 2, width), 1, height)


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 images (N, H, W, 1 or 3) to the network's float32 input (N, 299, 299, 3) in [-1, 1]."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'Expected images (N, H, W, C) with C = 1 or 3, got shape {images.shape}.')
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = resize_bilinear(x, INPUT_SIZE, INPUT_SIZE)
  return 2.0 * x - 1.0


class BasicConv(nn.Module):
  """Convolution without bias, batch norm (running statistics, eps 1e-3) and ReLU.

  Attributes:
    features: output channels.
    kernel: (kh, kw).
    stride: the stride in both directions.
    padding: (ph, pw), zeros added on both sides.
    dtype: the compute dtype.
  """
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    precision = jax.lax.Precision.HIGHEST if self.dtype == jnp.float32 else None
    x = nn.Conv(self.features, self.kernel, strides=self.stride,
                padding=[(p, p) for p in self.padding], use_bias=False, dtype=self.dtype,
                precision=precision, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPSILON, dtype=self.dtype,
                     name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, padding: int) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((padding, padding),) * 2)


class FIDInceptionA(nn.Module):
  """Mixed_5b-d: 1x1, 5x5, double 3x3 and avg-pool (padding not counted) branches."""
  pool_features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=self.dtype, name=name)
    b1 = conv('branch1x1', 64, (1, 1))(x)
    b5 = conv('branch5x5_2', 64, (5, 5), padding=(2, 2))(conv('branch5x5_1', 48, (1, 1))(x))
    b3 = conv('branch3x3dbl_1', 64, (1, 1))(x)
    b3 = conv('branch3x3dbl_2', 96, (3, 3), padding=(1, 1))(b3)
    b3 = conv('branch3x3dbl_3', 96, (3, 3), padding=(1, 1))(b3)
    bp = conv('branch_pool', self.pool_features, (1, 1))(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: strided 3x3, double 3x3 and max-pool branches (35 -> 17)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=self.dtype, name=name)
    b3 = conv('branch3x3', 384, (3, 3), stride=2)(x)
    bd = conv('branch3x3dbl_1', 64, (1, 1))(x)
    bd = conv('branch3x3dbl_2', 96, (3, 3), padding=(1, 1))(bd)
    bd = conv('branch3x3dbl_3', 96, (3, 3), stride=2)(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class FIDInceptionC(nn.Module):
  """Mixed_6b-e: 1x1, factorised 7x7, double factorised 7x7 and avg-pool branches."""
  channels_7x7: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=self.dtype, name=name)
    c7 = self.channels_7x7
    b1 = conv('branch1x1', 192, (1, 1))(x)
    b7 = conv('branch7x7_1', c7, (1, 1))(x)
    b7 = conv('branch7x7_2', c7, (1, 7), padding=(0, 3))(b7)
    b7 = conv('branch7x7_3', 192, (7, 1), padding=(3, 0))(b7)
    bd = conv('branch7x7dbl_1', c7, (1, 1))(x)
    bd = conv('branch7x7dbl_2', c7, (7, 1), padding=(3, 0))(bd)
    bd = conv('branch7x7dbl_3', c7, (1, 7), padding=(0, 3))(bd)
    bd = conv('branch7x7dbl_4', c7, (7, 1), padding=(3, 0))(bd)
    bd = conv('branch7x7dbl_5', 192, (1, 7), padding=(0, 3))(bd)
    bp = conv('branch_pool', 192, (1, 1))(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: 1x1 then strided 3x3, factorised 7x7 then strided 3x3, and max-pool (17 -> 8)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=self.dtype, name=name)
    b3 = conv('branch3x3_2', 320, (3, 3), stride=2)(conv('branch3x3_1', 192, (1, 1))(x))
    b7 = conv('branch7x7x3_1', 192, (1, 1))(x)
    b7 = conv('branch7x7x3_2', 192, (1, 7), padding=(0, 3))(b7)
    b7 = conv('branch7x7x3_3', 192, (7, 1), padding=(3, 0))(b7)
    b7 = conv('branch7x7x3_4', 192, (3, 3), stride=2)(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class FIDInceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, pool 'avg') and Mixed_7c (FIDInceptionE_2, pool 'max').

  Attributes:
    pool: 'avg' (3x3 average, padding not counted) or 'max' (3x3 max) for the pool branch.
    dtype: the compute dtype.
  """
  pool: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=self.dtype, name=name)
    b1 = conv('branch1x1', 320, (1, 1))(x)
    b3 = conv('branch3x3_1', 384, (1, 1))(x)
    b3 = jnp.concatenate([conv('branch3x3_2a', 384, (1, 3), padding=(0, 1))(b3),
                          conv('branch3x3_2b', 384, (3, 1), padding=(1, 0))(b3)], axis=-1)
    bd = conv('branch3x3dbl_1', 448, (1, 1))(x)
    bd = conv('branch3x3dbl_2', 384, (3, 3), padding=(1, 1))(bd)
    bd = jnp.concatenate([conv('branch3x3dbl_3a', 384, (1, 3), padding=(0, 1))(bd),
                          conv('branch3x3dbl_3b', 384, (3, 1), padding=(1, 0))(bd)], axis=-1)
    if self.pool == 'avg':
      pooled = _avg_pool_3x3(x)
    elif self.pool == 'max':
      pooled = _max_pool_3x3(x, 1, 1)
    else:
      raise ValueError(f"FIDInceptionE.pool must be 'avg' or 'max', got {self.pool!r}.")
    bp = conv('branch_pool', 192, (1, 1))(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """pytorch-fid's FID InceptionV3 on preprocessed images.

  Attributes:
    dtype: the compute dtype (float32 or bfloat16); the outputs are float32 either way.
  """
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pool3 features and logits.

    Args:
      x: (N, H, W, 3) float32 in [-1, 1]; 299 x 299 for FID (see ``preprocess``), at least 75.

    Returns:
      pool3 (N, 2048) and logits (N, 1008), float32.
    """
    d = self.dtype
    conv = lambda name, *args, **kw: BasicConv(*args, **kw, dtype=d, name=name)
    x = conv('Conv2d_1a_3x3', 32, (3, 3), stride=2)(x.astype(d))
    x = conv('Conv2d_2a_3x3', 32, (3, 3))(x)
    x = conv('Conv2d_2b_3x3', 64, (3, 3), padding=(1, 1))(x)
    x = _max_pool_3x3(x, 2, 0)
    x = conv('Conv2d_3b_1x1', 80, (1, 1))(x)
    x = conv('Conv2d_4a_3x3', 192, (3, 3))(x)
    x = _max_pool_3x3(x, 2, 0)
    x = FIDInceptionA(32, dtype=d, name='Mixed_5b')(x)
    x = FIDInceptionA(64, dtype=d, name='Mixed_5c')(x)
    x = FIDInceptionA(64, dtype=d, name='Mixed_5d')(x)
    x = InceptionB(dtype=d, name='Mixed_6a')(x)
    for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = FIDInceptionC(c7, dtype=d, name=name)(x)
    x = InceptionD(dtype=d, name='Mixed_7a')(x)
    x = FIDInceptionE('avg', dtype=d, name='Mixed_7b')(x)
    x = FIDInceptionE('max', dtype=d, name='Mixed_7c')(x)
    pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    logits = nn.Dense(NUM_LOGITS, dtype=jnp.float32, precision=jax.lax.Precision.HIGHEST,
                      name='fc')(pool3)
    return pool3, logits


def variables_template() -> dict:
  """The variables tree of ``InceptionV3`` as ShapeDtypeStructs (float32), for loading weights."""
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(InceptionV3().init, jax.random.key(0), x)


@functools.lru_cache(maxsize=8)
def _sharded_forward(mesh: Mesh, dtype: str):
  """The jitted preprocess + forward for a mesh and dtype, shared so that each compiles once.

  Its outputs are replicated: every process receives every image's features.
  """
  model = InceptionV3(dtype=DTYPES[dtype])
  replicated = NamedSharding(mesh, P())
  return jax.jit(lambda v, images: model.apply(v, preprocess(images)),
                 in_shardings=(replicated, NamedSharding(mesh, P('data'))),
                 out_shardings=replicated)


@functools.lru_cache(maxsize=8)
def _batching(mesh: Mesh, batch: int):
  """Jitted (stack, take) that cut images (N, ...) on ``mesh`` into the forward's batches.

  stack(images) pads the images with copies of the last one to K = ceil(N / batch) batches, as
  (K, batch, ...) with each batch split over 'data'; take(stacked, k) is batch k. Only stack moves
  images between devices, once.
  """

  def stack(images):
    count = -(-len(images) // batch)
    padded = jnp.concatenate([images, jnp.repeat(images[-1:], count * batch - len(images), 0)])
    return padded.reshape(count, batch, *images.shape[1:])

  take = lambda stacked, k: stacked[k]
  return (jax.jit(stack, out_shardings=NamedSharding(mesh, P(None, 'data'))),
          jax.jit(take, out_shardings=NamedSharding(mesh, P('data'))))


def make_features_fn(
    variables: dict, mesh: Mesh, dtype: str = 'float32', batch_size: int = 200
) -> Callable[[np.ndarray | jax.Array], tuple[np.ndarray, np.ndarray]]:
  """Returns features(images) -> (pool3 (N, 2048), logits (N, 1008)) float32 numpy arrays.

  The images are a jax.Array on ``mesh``'s devices (the samples of evaluation: a global array
  split over 'data' or replicated, which no process needs to hold whole), or a numpy array that
  every process holds whole. They run in batches of ``batch_size`` (rounded up to a multiple of
  the device count) at one compiled shape, each batch split over ``mesh``'s 'data' axis; the last
  batch is padded with copies of the last image and the padding is dropped. Every process
  receives all the features. Each image's outputs depend on that image only, so they do not
  depend on the device or process count or the batch size beyond rounding.

  Args:
    variables: ``InceptionV3`` variables {'params', 'batch_stats'} (see ``inception_weights``).
    mesh: a 1-D mesh with axis 'data' (``sampling.make_mesh()``).
    dtype: 'float32' or 'bfloat16', the network's compute dtype.
    batch_size: images per forward pass.
  """
  if dtype not in DTYPES:
    raise ValueError(f'The Inception dtype must be one of {sorted(DTYPES)}, got {dtype!r}.')
  if batch_size < 1:
    raise ValueError(f'The Inception batch size must be positive, got {batch_size}.')
  batch = -(-batch_size // mesh.size) * mesh.size
  forward = _sharded_forward(mesh, dtype)
  stack, take = _batching(mesh, batch)
  variables = jax.device_put(variables, NamedSharding(mesh, P()))

  def inputs(images: np.ndarray | jax.Array) -> Iterator[jax.Array]:
    """The forward's batches of ``images``, each split over 'data'."""
    if isinstance(images, jax.Array):
      stacked = stack(images)
      yield from (take(stacked, k) for k in range(len(stacked)))
      return
    for start in range(0, len(images), batch):
      chunk = np.asarray(images[start:start + batch])
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
      yield jax.make_array_from_callback(padded.shape, NamedSharding(mesh, P('data')),
                                         lambda index, padded=padded: padded[index])

  def features(images: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
    if images.dtype != np.uint8:
      raise ValueError(f'The Inception takes uint8 images, got {images.dtype}.')
    pool3, logits = [], []
    for x in inputs(images):
      p, l = forward(variables, x)
      pool3.append(np.asarray(p.addressable_data(0)))
      logits.append(np.asarray(l.addressable_data(0)))
    if not pool3:
      return (np.zeros((0, NUM_FEATURES), np.float32), np.zeros((0, NUM_LOGITS), np.float32))
    return np.concatenate(pool3)[:len(images)], np.concatenate(logits)[:len(images)]

  return features
