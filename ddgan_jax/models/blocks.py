"""Building blocks of the NCSN++ generator: ResNet blocks with adaptive group norm, attention,
up/downsampling layers and the skip combiner. All NHWC.

Submodule names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ``Conv2d_0``, ...) are those of
the official PyTorch modules, so checkpoints convert key by key.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddgan_jax.models import layers

_SQRT2 = float(np.sqrt(2.0))


def _resample(x: jax.Array, up: bool, down: bool, fir: bool, kernel: Sequence[float]) -> jax.Array:
  """Parameter-free 2x resampling used inside the BigGAN blocks."""
  if up:
    return layers.upsample_2d(x, kernel) if fir else layers.naive_upsample_2d(x)
  if down:
    return layers.downsample_2d(x, kernel) if fir else layers.naive_downsample_2d(x)
  return x


class ResnetBlockBigGAN(nn.Module):
  """BigGAN-style residual block with adaptive group norm (official ``ResnetBlockBigGANpp_Adagn``).

  h = SiLU(AdaGN_0(x, z)); resample h and x; h = Conv_0(h) + Dense_0(SiLU(temb));
  h = SiLU(AdaGN_1(h, z)) (a plain affine GroupNorm when ``one_adagn``); dropout; h = Conv_1(h)
  (initialised near zero); a 1x1 Conv_2 maps x when channels change or the block resamples;
  out = (x + h) / sqrt(2) with ``skip_rescale``, else x + h.

  Attributes:
    out_ch: output channels; None keeps the input channels.
    up: upsample 2x.
    down: downsample 2x.
    one_adagn: use a plain GroupNorm for the second norm (``biggan_oneadagn``).
    dropout: dropout rate before Conv_1.
    fir: FIR (True) or nearest/average (False) resampling.
    fir_kernel: FIR taps.
    skip_rescale: divide the sum by sqrt(2).
    init_scale: initialiser scale of Conv_1.
    dtype: computation dtype.
  """

  out_ch: int | None = None
  up: bool = False
  down: bool = False
  one_adagn: bool = False
  dropout: float = 0.0
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, zemb, train: bool = False):
    """x (B, H, W, C), temb (B, E) or None, zemb (B, Z) -> (B, H', W', out_ch)."""
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = nn.silu(layers.AdaptiveGroupNorm(self.dtype, name='GroupNorm_0')(x, zemb))
    h = _resample(h, self.up, self.down, self.fir, self.fir_kernel)
    x = _resample(x, self.up, self.down, self.fir, self.fir_kernel)
    h = layers.conv(out_ch, 3, dtype=self.dtype, name='Conv_0')(h)
    if temb is not None:
      h = h + nn.Dense(
          out_ch, kernel_init=layers.default_init(), dtype=self.dtype, name='Dense_0'
      )(nn.silu(temb))[:, None, None, :]
    if self.one_adagn:
      h = nn.silu(layers.GroupNorm(name='GroupNorm_1')(h))
    else:
      h = nn.silu(layers.AdaptiveGroupNorm(self.dtype, name='GroupNorm_1')(h, zemb))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = layers.conv(out_ch, 3, init=layers.default_init(self.init_scale), dtype=self.dtype,
                    name='Conv_1')(h)
    if in_ch != out_ch or self.up or self.down:
      x = layers.conv(out_ch, 1, dtype=self.dtype, name='Conv_2')(x)
    return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockDDPM(nn.Module):
  """DDPM-style residual block with adaptive group norm (official ``ResnetBlockDDPMpp_Adagn``).

  Like the BigGAN block without resampling; the shortcut is a ``NIN`` layer when channels change.

  Attributes:
    out_ch: output channels; None keeps the input channels.
    dropout: dropout rate before Conv_1.
    skip_rescale: divide the sum by sqrt(2).
    init_scale: initialiser scale of Conv_1.
    dtype: computation dtype.
  """

  out_ch: int | None = None
  dropout: float = 0.0
  skip_rescale: bool = True
  init_scale: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb, zemb, train: bool = False):
    """x (B, H, W, C), temb (B, E) or None, zemb (B, Z) -> (B, H, W, out_ch)."""
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = nn.silu(layers.AdaptiveGroupNorm(self.dtype, name='GroupNorm_0')(x, zemb))
    h = layers.conv(out_ch, 3, dtype=self.dtype, name='Conv_0')(h)
    if temb is not None:
      h = h + nn.Dense(
          out_ch, kernel_init=layers.default_init(), dtype=self.dtype, name='Dense_0'
      )(nn.silu(temb))[:, None, None, :]
    h = nn.silu(layers.AdaptiveGroupNorm(self.dtype, name='GroupNorm_1')(h, zemb))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = layers.conv(out_ch, 3, init=layers.default_init(self.init_scale), dtype=self.dtype,
                    name='Conv_1')(h)
    if in_ch != out_ch:
      x = layers.NIN(out_ch, dtype=self.dtype, name='NIN_0')(x)
    return (x + h) / _SQRT2 if self.skip_rescale else x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over all positions (official ``AttnBlockpp``).

  Attributes:
    skip_rescale: divide the residual sum by sqrt(2).
    init_scale: initialiser scale of the output projection NIN_3.
    dtype: computation dtype.
  """

  skip_rescale: bool = True
  init_scale: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C)."""
    b, hh, ww, c = x.shape
    h = layers.GroupNorm(name='GroupNorm_0')(x)
    q = layers.NIN(c, dtype=self.dtype, name='NIN_0')(h).reshape(b, hh * ww, c)
    k = layers.NIN(c, dtype=self.dtype, name='NIN_1')(h).reshape(b, hh * ww, c)
    v = layers.NIN(c, dtype=self.dtype, name='NIN_2')(h).reshape(b, hh * ww, c)
    logits = jnp.einsum('bqc,bkc->bqk', q, k).astype(jnp.float32) * (c**-0.5)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    h = jnp.einsum('bqk,bkc->bqc', weights, v).reshape(b, hh, ww, c)
    h = layers.NIN(c, init_scale=self.init_scale, dtype=self.dtype, name='NIN_3')(h)
    return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Upsample(nn.Module):
  """2x upsampling, optionally with a 3x3 convolution (official ``layerspp.Upsample``).

  fir + conv: fused FIR transposed convolution (``Conv2d_0``); fir alone: FIR upsampling;
  no fir: nearest neighbour, then ``Conv_0`` when with_conv.

  Attributes:
    out_ch: output channels (with a convolution); None keeps the input channels.
    with_conv: apply a convolution.
    fir: FIR (True) or nearest-neighbour resampling.
    fir_kernel: FIR taps.
    dtype: computation dtype.
  """

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 2H, 2W, out_ch or C)."""
    out_ch = self.out_ch or x.shape[-1]
    if self.fir:
      if self.with_conv:
        return layers.FIRConv2d(out_ch, up=True, kernel=self.fir_kernel, dtype=self.dtype,
                                name='Conv2d_0')(x)
      return layers.upsample_2d(x, self.fir_kernel)
    h = layers.naive_upsample_2d(x)
    if self.with_conv:
      h = layers.conv(out_ch, 3, dtype=self.dtype, name='Conv_0')(h)
    return h


class Downsample(nn.Module):
  """2x downsampling, optionally with a 3x3 convolution (official ``layerspp.Downsample``).

  fir + conv: FIR blur then stride-2 convolution (``Conv2d_0``); fir alone: FIR downsampling;
  no fir: pad (0, 1) then a stride-2 ``Conv_0`` when with_conv, else 2x2 average pooling.

  Attributes:
    out_ch: output channels (with a convolution); None keeps the input channels.
    with_conv: apply a convolution.
    fir: FIR (True) or plain resampling.
    fir_kernel: FIR taps.
    dtype: computation dtype.
  """

  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, out_ch or C)."""
    out_ch = self.out_ch or x.shape[-1]
    if self.fir:
      if self.with_conv:
        return layers.FIRConv2d(out_ch, down=True, kernel=self.fir_kernel, dtype=self.dtype,
                                name='Conv2d_0')(x)
      return layers.downsample_2d(x, self.fir_kernel)
    if self.with_conv:
      return layers.conv(out_ch, 3, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype,
                         name='Conv_0')(x)
    return layers.naive_downsample_2d(x)


class Combine(nn.Module):
  """Merges the input pyramid into the features: a 1x1 conv of the pyramid, then concat or sum.

  Attributes:
    features: channels of the 1x1 convolution (the feature channels).
    method: 'cat' or 'sum'.
    dtype: computation dtype.
  """

  features: int
  method: str = 'cat'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pyramid: jax.Array, h: jax.Array) -> jax.Array:
    """pyramid (B, H, W, Cp), h (B, H, W, C) -> (B, H, W, 2C) for 'cat' or (B, H, W, C)."""
    p = layers.conv(self.features, 1, dtype=self.dtype, name='Conv_0')(pyramid)
    if self.method == 'cat':
      return jnp.concatenate([p, h], axis=-1)
    if self.method == 'sum':
      return p + h
    raise ValueError(f"Unknown progressive_combine {self.method!r}: use 'cat' or 'sum'.")
