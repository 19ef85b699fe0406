"""Time-conditioned DDGAN discriminators D(x_t, t, x_{t+1}) for 32x32 ("small") and 256x256
("large") images. NHWC, Flax Linen; submodule names follow the official PyTorch attribute names.

Every layer uses the official ``dense_layer`` initialiser (uniform, bound sqrt(3 scale / fan_out)).
No spectral norm. LeakyReLU slope 0.2 throughout.

Fix: the official minibatch-stddev reshapes the batch into groups of min(B, 4) and crashes when B
is not a multiple of that; here the group is the largest divisor of B that is at most 4.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddgan_jax.models import embeddings
from ddgan_jax.models import layers

_SQRT2 = float(np.sqrt(2.0))
_STDDEV_GROUP = 4


def _lrelu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, 0.2)


def minibatch_stddev(x: jax.Array, group_size: int = _STDDEV_GROUP) -> jax.Array:
  """Appends the minibatch standard deviation as one extra channel (StyleGAN2).

  The batch is viewed as (G, B/G, ...): sample i is grouped with samples i + k B/G. For each group,
  sqrt(population variance over the group + 1e-8) is averaged over H, W and C.

  Args:
    x: (B, H, W, C) features.
    group_size: the largest group size (the official 4).

  Returns:
    (B, H, W, C + 1).
  """
  b, h, w, c = x.shape
  group = max(g for g in range(1, min(b, group_size) + 1) if b % g == 0)
  y = x.astype(jnp.float32).reshape(group, b // group, h, w, c)
  std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8).mean(axis=(1, 2, 3))
  std = jnp.tile(std, group).astype(x.dtype)
  return jnp.concatenate([x, jnp.broadcast_to(std[:, None, None, None], (b, h, w, 1))], axis=-1)


def _dense(features: int, dtype, name: str, init_scale: float = 1.0) -> nn.Dense:
  return nn.Dense(features, kernel_init=layers.fan_out_init(init_scale), dtype=dtype, name=name)


def _conv(features: int, size: int, dtype, name: str, init_scale: float = 1.0,
          use_bias: bool = True) -> nn.Conv:
  return layers.conv(features, size, use_bias=use_bias, init=layers.fan_out_init(init_scale),
                     dtype=dtype, name=name)


class TimestepEmbedding(nn.Module):
  """Sinusoidal(t, dim) -> Dense -> LeakyReLU -> Dense (official ``t_embed.main``).

  Attributes:
    dim: embedding width, hidden width and output width.
    dtype: computation dtype.
  """

  dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    """(B,) -> (B, dim)."""
    h = embeddings.timestep_embedding(t, self.dim)
    h = _lrelu(_dense(self.dim, self.dtype, 'main_0')(h))
    return _dense(self.dim, self.dtype, 'main_2')(h)


class DownConvBlock(nn.Module):
  """Residual block: conv1(LReLU(x)) + dense_t1(temb), LReLU, FIR downsample of both paths,
  conv2 (initialised near zero); skip = bias-free 1x1 conv; out = (h + skip) / sqrt(2).

  Attributes:
    out_ch: output channels.
    downsample: halve the resolution.
    fir_kernel: FIR taps.
    dtype: computation dtype.
  """

  out_ch: int
  downsample: bool = False
  fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    """x (B, H, W, C), temb (B, E) -> (B, H', W', out_ch)."""
    h = _conv(self.out_ch, 3, self.dtype, 'conv1')(_lrelu(x))
    h = h + _dense(self.out_ch, self.dtype, 'dense_t1')(temb)[:, None, None, :]
    h = _lrelu(h)
    if self.downsample:
      h = layers.downsample_2d(h, self.fir_kernel)
      x = layers.downsample_2d(x, self.fir_kernel)
    h = _conv(self.out_ch, 3, self.dtype, 'conv2', init_scale=0.0)(h)
    skip = _conv(self.out_ch, 1, self.dtype, 'skip', use_bias=False)(x)
    return (h + skip) / _SQRT2


class Discriminator(nn.Module):
  """DDGAN discriminator; ``size`` picks the official small (32x32) or large (256x256) layout.

  small: 1x1 conv to 2ngf, blocks 2ngf->2ngf, 2ngf->4ngf (down), 4ngf->8ngf (down), 8ngf->8ngf
  (down). large: 1x1 conv to 2ngf, then six downsampling blocks to 4ngf, 8ngf, 8ngf, 8ngf, 8ngf,
  8ngf. Both end with minibatch stddev, a 3x3 conv to 8ngf (initialised near zero in small only),
  LeakyReLU, a sum over space and a dense layer to one logit.

  Attributes:
    size: 'small' or 'large'.
    ngf: base width.
    t_emb_dim: time-embedding width.
    fir_kernel: FIR taps.
    dtype: computation dtype.
  """

  size: str = 'small'
  ngf: int = 64
  t_emb_dim: int = 256
  fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, x_tp1: jax.Array) -> jax.Array:
    """Scores a pair (x_t, x_{t+1}) at target level t.

    Args:
      x_t: (B, H, W, C) the less noisy sample.
      t: (B,) int target level.
      x_tp1: (B, H, W, C) the noisier sample it was denoised from.

    Returns:
      (B, 1) float32 logits.
    """
    ngf = self.ngf
    if self.size == 'small':
      plan = [(2 * ngf, False), (4 * ngf, True), (8 * ngf, True), (8 * ngf, True)]
      final_init = 0.0
    elif self.size == 'large':
      plan = [(4 * ngf, True), (8 * ngf, True)] + [(8 * ngf, True)] * 4
      final_init = 1.0
    else:
      raise ValueError(f"Unknown discriminator size {self.size!r}: use 'small' or 'large'.")
    temb = _lrelu(TimestepEmbedding(self.t_emb_dim, self.dtype, name='t_embed')(t))
    h = jnp.concatenate([x_t, x_tp1], axis=-1).astype(self.dtype)
    h = _conv(2 * ngf, 1, self.dtype, 'start_conv')(h)
    for i, (out_ch, down) in enumerate(plan):
      h = DownConvBlock(out_ch, down, self.fir_kernel, self.dtype, name=f'conv{i + 1}')(h, temb)
    h = minibatch_stddev(h)
    h = _lrelu(_conv(8 * ngf, 3, self.dtype, 'final_conv', init_scale=final_init)(h))
    h = jnp.sum(h.astype(jnp.float32), axis=(1, 2))
    return _dense(1, jnp.float32, 'end_linear')(h)


def from_config(config: ml_collections.ConfigDict) -> Discriminator:
  """Builds the discriminator named by ``config.model.discriminator`` ('small' or 'large')."""
  from ddgan_jax.models import compute_dtype  # pylint: disable=g-import-not-at-top
  m = config.model
  return Discriminator(size=m.discriminator, ngf=m.ngf, t_emb_dim=m.t_emb_dim,
                       fir_kernel=tuple(int(k) for k in m.fir_kernel), dtype=compute_dtype(config))
