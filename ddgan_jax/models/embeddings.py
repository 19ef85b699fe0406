"""Time embeddings shared by the generators and discriminators."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, max_positions: int = 10_000) -> jax.Array:
  """Sinusoidal embedding of integer (or real) time indices, as in DDPM/NCSN++.

  Frequencies are exp(-j ln(max_positions) / (dim/2 - 1)) for j < dim/2; the first half of the
  output is the sines, the second half the cosines; an odd ``dim`` gets one zero column.

  Args:
    t: (B,) time indices.
    dim: embedding width (>= 4).
    max_positions: the longest period.

  Returns:
    (B, dim) float32 embedding.
  """
  if dim < 4:
    raise ValueError(f'Time embedding width must be at least 4, got {dim}.')
  half = dim // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(max_positions) / (half - 1)))
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class GaussianFourierProjection(nn.Module):
  """Random Fourier features of log(1 + t), with fixed (non-trained) Gaussian frequencies.

  The official code embeds log(t), which is -inf, and so NaN downstream, at t = 0: the first
  denoising step of every chain. log(1 + t) is finite everywhere and still monotone in t.

  Attributes:
    embedding_size: number of frequencies; the output has twice as many features.
    scale: standard deviation of the frequencies.
  """

  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    """(B,) time indices -> (B, 2 * embedding_size)."""
    w = self.variable(
        'constants', 'W',
        lambda: self.scale * jax.random.normal(self.make_rng('params'), (self.embedding_size,)),
    ).value
    proj = jnp.log1p(t.astype(jnp.float32))[:, None] * w[None, :] * (2.0 * math.pi)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
