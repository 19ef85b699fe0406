"""The DDGAN generator: NCSN++ (Song et al. 2021) with a latent z entering every block through
adaptive group norm. NHWC, Flax Linen.

G(x_{t+1}, t, z) predicts x_0. Top-level submodules are named ``m{index}_{kind}`` where ``index``
is the position of the same layer in the official ``all_modules`` list, so official checkpoints
convert one module at a time (see ``ddgan_jax.convert``). The mapping network is ``z_transform``.

Differences from the official code, all fixes of configurations that crash or misbehave there:
  * ``progressive='residual'`` and ``resblock_type='ddpm'`` with ``fir`` (the fused FIR transposed
    convolution) crash in PyTorch and work here.
  * ``embedding_type='fourier'`` embeds log(1 + t), finite at t = 0, instead of log(t).
  * ``centered=False`` (data in [0, 1]) maps the output back to [0, 1]; the official network
    returns tanh values in [-1, 1] for [0, 1] data.
"""

from collections.abc import Sequence
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ddgan_jax.models import blocks
from ddgan_jax.models import embeddings
from ddgan_jax.models import layers

_RESBLOCK_TYPES = ('biggan', 'biggan_oneadagn', 'ddpm')
_PROGRESSIVE = ('none', 'output_skip', 'residual')
_PROGRESSIVE_INPUT = ('none', 'input_skip', 'residual')


class MappingNetwork(nn.Module):
  """z -> z embedding: PixelNorm, Dense(nz -> z_emb_dim) + SiLU, then n_mlp x [Dense + SiLU].

  Dense layers use the official fan_out initialiser and are named ``Dense_0 ... Dense_{n_mlp}``
  (official ``z_transform.1, .3, ...``).

  Attributes:
    z_emb_dim: width of the embedding.
    n_mlp: hidden layers after the first.
    dtype: computation dtype.
  """

  z_emb_dim: int = 256
  n_mlp: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """(B, nz) -> (B, z_emb_dim)."""
    z = z.astype(jnp.float32)
    h = z * jax.lax.rsqrt(jnp.mean(jnp.square(z), axis=1, keepdims=True) + 1e-8)
    for i in range(self.n_mlp + 1):
      h = nn.silu(nn.Dense(self.z_emb_dim, kernel_init=layers.fan_out_init(), dtype=self.dtype,
                           name=f'Dense_{i}')(h))
    return h


class NCSNpp(nn.Module):
  """NCSN++ generator with latent z (official ``NCSNpp`` of ncsnpp_generator_adagn.py).

  Attributes: the fields of ``config.model`` of the same names (see configs/default.py), plus
  ``dtype``, the computation dtype (parameters are always float32).
  """

  image_size: int = 32
  num_channels: int = 3
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.0
  resamp_with_conv: bool = True
  conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = 'biggan'
  progressive: str = 'none'
  progressive_input: str = 'residual'
  progressive_combine: str = 'sum'
  embedding_type: str = 'positional'
  fourier_scale: float = 16.0
  use_tanh: bool = True
  centered: bool = True
  init_scale: float = 0.0
  nz: int = 100
  z_emb_dim: int = 256
  n_mlp: int = 4
  dtype: jnp.dtype = jnp.float32

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'NCSNpp':
    """Builds the generator from ``config.model`` and ``config.training.dtype``."""
    from ddgan_jax.models import compute_dtype  # pylint: disable=g-import-not-at-top
    m = config.model
    fields = [f for f in cls.__dataclass_fields__ if f not in ('dtype', 'parent', 'name')]
    kwargs = {f: m[f] for f in fields}
    for f in ('ch_mult', 'attn_resolutions', 'fir_kernel'):
      kwargs[f] = tuple(int(v) for v in kwargs[f])
    return cls(dtype=compute_dtype(config), **kwargs)

  def _check(self):
    for value, allowed, field in ((self.resblock_type, _RESBLOCK_TYPES, 'resblock_type'),
                                  (self.progressive, _PROGRESSIVE, 'progressive'),
                                  (self.progressive_input, _PROGRESSIVE_INPUT, 'progressive_input'),
                                  (self.progressive_combine, ('sum', 'cat'), 'progressive_combine'),
                                  (self.embedding_type, ('positional', 'fourier'), 'embedding_type')):
      if value not in allowed:
        raise ValueError(f'config.model.{field}={value!r} is not one of {allowed}.')

  def _resblock(self, name: str, out_ch: int | None = None, up: bool = False, down: bool = False):
    if self.resblock_type == 'ddpm':
      return blocks.ResnetBlockDDPM(out_ch, self.dropout, self.skip_rescale, self.init_scale,
                                    self.dtype, name=name)
    return blocks.ResnetBlockBigGAN(
        out_ch, up, down, self.resblock_type == 'biggan_oneadagn', self.dropout, self.fir,
        self.fir_kernel, self.skip_rescale, self.init_scale, self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, z: jax.Array, train: bool = False) -> jax.Array:
    """Predicts x_0.

    Args:
      x: (B, H, W, C) the noisy sample x_{t+1}.
      t: (B,) int 0-based index of the target level (see ``ddgan_jax.diffusion``).
      z: (B, nz) latent.
      train: enables dropout (needs a 'dropout' rng when config.model.dropout > 0).

    Returns:
      (B, H, W, C) float32 prediction of x_0.
    """
    self._check()
    if z.shape[-1] != self.nz:
      raise ValueError(f'The latent z has {z.shape[-1]} features; config.model.nz is {self.nz}.')
    index = itertools.count()
    name = lambda kind: f'm{next(index):02d}_{kind}'
    num_levels = len(self.ch_mult)
    resolutions = [self.image_size // 2**i for i in range(num_levels)]
    act = nn.silu
    attn = lambda: blocks.AttnBlock(self.skip_rescale, self.init_scale, self.dtype,
                                    name=name('attn'))

    zemb = MappingNetwork(self.z_emb_dim, self.n_mlp, self.dtype, name='z_transform')(z)
    if self.embedding_type == 'fourier':
      temb = embeddings.GaussianFourierProjection(self.nf, self.fourier_scale,
                                                  name=name('fourier'))(t)
    else:
      temb = embeddings.timestep_embedding(t, self.nf)
    if self.conditional:
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=self.dtype,
                      name=name('temb_dense'))(temb)
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=self.dtype,
                      name=name('temb_dense'))(act(temb))
    else:
      temb = None

    x = x.astype(self.dtype)
    if not self.centered:
      x = 2 * x - 1.0
    input_pyramid = x
    hs = [layers.conv(self.nf, 3, dtype=self.dtype, name=name('conv_in'))(x)]
    for i_level in range(num_levels):
      for _ in range(self.num_res_blocks):
        h = self._resblock(name('resblock'), self.nf * self.ch_mult[i_level])(
            hs[-1], temb, zemb, train)
        if resolutions[i_level] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if i_level == num_levels - 1:
        continue
      if self.resblock_type == 'ddpm':
        h = blocks.Downsample(with_conv=self.resamp_with_conv, fir=self.fir,
                              fir_kernel=self.fir_kernel, dtype=self.dtype,
                              name=name('downsample'))(hs[-1])
      else:
        h = self._resblock(name('resblock_down'), down=True)(hs[-1], temb, zemb, train)
      if self.progressive_input == 'input_skip':
        input_pyramid = blocks.Downsample(fir=self.fir, fir_kernel=self.fir_kernel)(input_pyramid)
        h = blocks.Combine(h.shape[-1], self.progressive_combine, self.dtype,
                           name=name('combine'))(input_pyramid, h)
      elif self.progressive_input == 'residual':
        input_pyramid = blocks.Downsample(h.shape[-1], with_conv=True, fir=self.fir,
                                          fir_kernel=self.fir_kernel, dtype=self.dtype,
                                          name=name('pyramid_down'))(input_pyramid)
        input_pyramid = input_pyramid + h
        if self.skip_rescale:
          input_pyramid = input_pyramid / jnp.sqrt(2.0).astype(self.dtype)
        h = input_pyramid
      hs.append(h)

    h = hs[-1]
    h = self._resblock(name('resblock'))(h, temb, zemb, train)
    h = attn()(h)
    h = self._resblock(name('resblock'))(h, temb, zemb, train)

    pyramid = None
    for i_level in reversed(range(num_levels)):
      for _ in range(self.num_res_blocks + 1):
        h = self._resblock(name('resblock'), self.nf * self.ch_mult[i_level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, zemb, train)
      if resolutions[i_level] in self.attn_resolutions:
        h = attn()(h)
      if self.progressive != 'none':
        pyramid = self._progressive_output(h, pyramid, i_level == num_levels - 1, name)
        if self.progressive == 'residual':
          h = pyramid
      if i_level != 0:
        if self.resblock_type == 'ddpm':
          h = blocks.Upsample(with_conv=self.resamp_with_conv, fir=self.fir,
                              fir_kernel=self.fir_kernel, dtype=self.dtype,
                              name=name('upsample'))(h)
        else:
          h = self._resblock(name('resblock_up'), up=True)(h, temb, zemb, train)

    if self.progressive == 'output_skip':
      h = pyramid
    else:
      h = act(layers.GroupNorm(name=name('norm_out'))(h))
      h = layers.conv(self.num_channels, 3, init=layers.default_init(self.init_scale),
                      dtype=self.dtype, name=name('conv_out'))(h)
    h = h.astype(jnp.float32)
    if self.use_tanh:
      h = jnp.tanh(h)
      if not self.centered:
        h = (h + 1.0) / 2.0
    return h

  def _progressive_output(self, h, pyramid, top_level: bool, name):
    """One level of the output pyramid ('output_skip' or 'residual')."""
    if self.progressive == 'output_skip':
      if not top_level:
        pyramid = blocks.Upsample(fir=self.fir, fir_kernel=self.fir_kernel)(pyramid)
      norm = layers.GroupNorm(name=name('pyramid_norm'))
      out = layers.conv(self.num_channels, 3, init=layers.default_init(self.init_scale),
                        dtype=self.dtype, name=name('pyramid_conv'))(nn.silu(norm(h)))
      return out if top_level else pyramid + out
    if top_level:
      norm = layers.GroupNorm(name=name('pyramid_norm'))
      return layers.conv(h.shape[-1], 3, dtype=self.dtype, name=name('pyramid_conv'))(
          nn.silu(norm(h)))
    pyramid = blocks.Upsample(h.shape[-1], with_conv=True, fir=self.fir, fir_kernel=self.fir_kernel,
                              dtype=self.dtype, name=name('pyramid_up'))(pyramid)
    pyramid = pyramid + h
    return pyramid / jnp.sqrt(2.0).astype(self.dtype) if self.skip_rescale else pyramid
