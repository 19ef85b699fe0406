"""Basic layers of the DDGAN networks: initialisers, FIR resampling, group norms, 1x1 "NIN" layers.

All layers are NHWC. FIR resampling is written with ``lax.conv_general_dilated`` only, so it runs on
any backend without custom kernels.

Initialisers follow the official PyTorch code, so a fresh model starts where the official one does:
  * ``default_init(scale)``: variance scaling, fan_avg, uniform (the DDPM init); scale 0 means 1e-10.
  * ``fan_out_init(scale)``: uniform with bound sqrt(3 scale / fan_out). The official
    ``dense_layer.dense``/``conv2d`` ask for fan_avg but PyTorch's helper silently returns fan_out;
    the discriminator and the generator's mapping network and AdaGN style layers are initialised so.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = jnp.dtype


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
  """DDPM initialiser: fan_avg uniform variance scaling; scale 0 becomes 1e-10."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, 'fan_avg', 'uniform')


def fan_out_init(scale: float = 1.0) -> nn.initializers.Initializer:
  """The official ``dense_layer`` initialiser: uniform, bound sqrt(3 scale / fan_out)."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, 'fan_out', 'uniform')


def conv(
    features: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    padding: int | Sequence[tuple[int, int]] | str | None = None,
    use_bias: bool = True,
    init: nn.initializers.Initializer | None = None,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
  """A square convolution with zero bias and the DDPM initialiser by default.

  Args:
    features: output channels.
    kernel_size: square kernel size.
    stride: stride in both spatial dimensions.
    padding: symmetric integer padding, explicit pairs or a string; default kernel_size // 2.
    use_bias: whether to add a bias.
    init: kernel initialiser; default ``default_init(1.0)``.
    dtype: computation dtype (parameters stay float32).
    name: module name.

  Returns:
    The configured ``nn.Conv``.
  """
  if padding is None:
    padding = kernel_size // 2
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=padding,
      use_bias=use_bias,
      kernel_init=init or default_init(),
      dtype=dtype,
      name=name,
  )


def group_norm_stats(x: jax.Array, num_groups: int, eps: float = 1e-6) -> jax.Array:
  """Normalises x over (H, W, C / num_groups) per sample and group, without affine parameters.

  Statistics are computed in float32 with the two-pass variance.

  Args:
    x: (B, H, W, C) features, C divisible by num_groups.
    num_groups: number of channel groups.
    eps: added to the variance.

  Returns:
    (B, H, W, C) normalised features in x's dtype.
  """
  b, h, w, c = x.shape
  if c % num_groups:
    raise ValueError(f'GroupNorm: {c} channels cannot be split into {num_groups} groups.')
  y = x.astype(jnp.float32).reshape(b, h, w, num_groups, c // num_groups)
  mean = jnp.mean(y, axis=(1, 2, 4), keepdims=True)
  var = jnp.mean(jnp.square(y - mean), axis=(1, 2, 4), keepdims=True)
  y = (y - mean) * jax.lax.rsqrt(var + eps)
  return y.reshape(b, h, w, c).astype(x.dtype)


def num_groups_for(channels: int) -> int:
  """The official group count: min(C // 4, 32)."""
  groups = min(channels // 4, 32)
  if groups < 1:
    raise ValueError(f'GroupNorm needs at least 4 channels, got {channels}.')
  return groups


class GroupNorm(nn.Module):
  """GroupNorm with per-channel affine parameters (PyTorch ``nn.GroupNorm``, eps 1e-6).

  Attributes:
    num_groups: channel groups; None picks min(C // 4, 32).
    eps: added to the variance.
  """

  num_groups: int | None = None
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    y = group_norm_stats(x, self.num_groups or num_groups_for(c), self.eps)
    return y * scale.astype(x.dtype) + bias.astype(x.dtype)


def _style_bias_init(key, shape, dtype=jnp.float32):
  """AdaGN style bias: ones for the gain half, zeros for the shift half."""
  del key
  half = shape[0] // 2
  return jnp.concatenate([jnp.ones((half,), dtype), jnp.zeros((shape[0] - half,), dtype)])


class AdaptiveGroupNorm(nn.Module):
  """GroupNorm without affine parameters, modulated by a latent: gamma * GN(x) + beta.

  (gamma, beta) = Dense(z_emb -> 2C) with the fan_out initialiser and bias [1]*C + [0]*C.

  Attributes:
    dtype: computation dtype.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, zemb: jax.Array) -> jax.Array:
    """x (B, H, W, C), zemb (B, Z) -> (B, H, W, C)."""
    c = x.shape[-1]
    style = nn.Dense(
        2 * c, kernel_init=fan_out_init(), bias_init=_style_bias_init, dtype=self.dtype, name='style'
    )(zemb)
    gamma, beta = style[:, None, None, :c], style[:, None, None, c:]
    return gamma * group_norm_stats(x, num_groups_for(c)) + beta


class NIN(nn.Module):
  """A 1x1 layer over channels (the official ``NIN``): x @ W + b, W initialised with scale 0.1.

  Attributes:
    features: output channels.
    init_scale: scale of the DDPM initialiser.
    dtype: computation dtype.
  """

  features: int
  init_scale: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(..., C) -> (..., features)."""
    w = self.param('W', default_init(self.init_scale), (x.shape[-1], self.features))
    b = self.param('b', nn.initializers.zeros, (self.features,))
    return jnp.dot(x, w.astype(self.dtype)) + b.astype(self.dtype)


# FIR resampling (StyleGAN2's upfirdn2d with separable kernels, as DDGAN uses them). Each axis is
# filtered with strided slices and multiply-adds rather than a grouped convolution: the same
# arithmetic, but XLA runs grouped and lhs-dilated convolutions (and their gradients) slowly.


def fir_taps(kernel: Sequence[float], gain: float = 1.0) -> np.ndarray:
  """1-D taps whose outer product is the normalised 2-D kernel times ``gain``."""
  k = np.asarray(kernel, dtype=np.float64)
  if k.ndim != 1 or k.size < 1:
    raise ValueError(f'The FIR kernel must be a 1-D list of taps, got {kernel!r}.')
  return (k / k.sum() * np.sqrt(gain)).astype(np.float32)


def _upfirdn_1d(x: jax.Array, taps: np.ndarray, axis: int, up: int, down: int,
                pad: tuple[int, int]) -> jax.Array:
  """upfirdn along one axis: zero insertion, zero padding, true convolution, subsampling."""
  if up > 1:
    zeros = jnp.zeros_like(x)
    x = jnp.stack([x] + [zeros] * (up - 1), axis=axis + 1)
    shape = list(x.shape)
    shape[axis:axis + 2] = [shape[axis] * up]
    x = x.reshape(shape)
  widths = [(0, 0)] * x.ndim
  widths[axis] = pad
  x = jnp.pad(x, widths)
  n_taps = len(taps)
  out_len = (x.shape[axis] - n_taps) // down + 1
  flipped = taps[::-1]
  out = None
  for u in range(n_taps):
    term = jax.lax.slice_in_dim(x, u, u + (out_len - 1) * down + 1, down, axis) * float(flipped[u])
    out = term if out is None else out + term
  return out


def upfirdn2d(
    x: jax.Array, taps: np.ndarray, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> jax.Array:
  """Upsample by zero insertion, pad, convolve with the separable kernel outer(taps, taps), then
  keep every ``down``-th pixel, in both spatial dimensions.

  Args:
    x: (B, H, W, C) images.
    taps: (k,) 1-D taps; the 2-D kernel is their outer product, flipped (true convolution).
    up: zero-insertion factor (each pixel is followed by up - 1 zeros).
    down: subsampling factor.
    pad: (before, after) zero padding of both spatial axes, after the zero insertion.

  Returns:
    (B, H', W', C) with H' = (H * up + pad[0] + pad[1] - k) // down + 1.
  """
  for axis in (1, 2):
    x = _upfirdn_1d(x, taps, axis, up, down, pad)
  return x


def upsample_2d(x: jax.Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> jax.Array:
  """FIR 2x upsampling: zero insertion, pad (2, 1) for a 4-tap kernel, blur with gain 4.

  Args:
    x: (B, H, W, C).
    kernel: 1-D FIR taps.

  Returns:
    (B, 2H, 2W, C).
  """
  taps = fir_taps(kernel, gain=4.0)
  p = len(taps) - 2
  return upfirdn2d(x, taps, up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample_2d(x: jax.Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> jax.Array:
  """FIR 2x downsampling: pad (1, 1) for a 4-tap kernel, blur, keep every second pixel.

  Args:
    x: (B, H, W, C), H and W even.
    kernel: 1-D FIR taps.

  Returns:
    (B, H/2, W/2, C).
  """
  taps = fir_taps(kernel)
  p = len(taps) - 2
  return upfirdn2d(x, taps, down=2, pad=((p + 1) // 2, p // 2))


def naive_upsample_2d(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling: (B, H, W, C) -> (B, 2H, 2W, C)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def naive_downsample_2d(x: jax.Array) -> jax.Array:
  """2x2 average pooling: (B, H, W, C) -> (B, H/2, W/2, C)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class FIRConv2d(nn.Module):
  """A 3x3 convolution fused with FIR 2x up- or downsampling (the official ``Conv2d_0`` layers).

  Down: pad (2, 2), blur, then a stride-2 valid convolution. Up: a stride-2 transposed convolution
  (zero insertion, pad 2, valid 3x3 correlation) followed by a blur with gain 4 and pad (1, 1). The
  official PyTorch port of the up path flips the weight with a negative-stride slice, which PyTorch
  rejects, so every configuration that upsamples with a convolution crashes there; here it works
  and matches the StyleGAN2/score_sde original.

  Attributes:
    features: output channels.
    up: upsample (exactly one of up/down must be set).
    down: downsample.
    kernel: 1-D FIR taps.
    dtype: computation dtype.
  """

  features: int
  up: bool = False
  down: bool = False
  kernel: Sequence[float] = (1, 3, 3, 1)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 2H, 2W, features) when up, (B, H/2, W/2, features) when down."""
    if self.up == self.down:
      raise ValueError('FIRConv2d needs exactly one of up=True or down=True.')
    w = self.param('kernel', default_init(), (3, 3, x.shape[-1], self.features)).astype(self.dtype)
    b = self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    x = x.astype(self.dtype)
    dn = ('NHWC', 'HWIO', 'NHWC')
    if self.down:
      taps = fir_taps(self.kernel)
      p = len(taps) - 2 + 2
      x = upfirdn2d(x, taps, pad=((p + 1) // 2, p // 2))
      y = jax.lax.conv_general_dilated(x, w, (2, 2), 'VALID', dimension_numbers=dn)
    else:
      y = jax.lax.conv_general_dilated(
          x, w, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2), dimension_numbers=dn
      )
      taps = fir_taps(self.kernel, gain=4.0)
      p = len(taps) - 2 - 2
      y = upfirdn2d(y, taps, pad=((p + 1) // 2 + 1, p // 2 + 1))
    return y + b
