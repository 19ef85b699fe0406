"""MLP generator and discriminator for the paper's 2-D toy experiment (data are vectors (B, D)).

Both networks follow the package interfaces (see ``ddgan_jax.models``):
  MLPGenerator:     G.apply({'params': p}, x_tp1, t, z, train=False) -> x0 prediction (B, D).
  MLPDiscriminator: D.apply({'params': p}, x_t, t, x_tp1) -> logits (B, 1).
The time index t enters through the sinusoidal ``timestep_embedding``. Parameters are float32;
``dtype`` is the compute dtype, and outputs are always float32.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ddgan_jax.models import compute_dtype
from ddgan_jax.models.embeddings import timestep_embedding


class _TimeConditionedMLP(nn.Module):
  """Fields and config plumbing shared by the toy generator and discriminator.

  Attributes:
    hidden: width of every hidden layer.
    layers: number of hidden layers.
    t_emb_dim: width of the sinusoidal time embedding.
    dtype: compute dtype.
  """

  hidden: int = 512
  layers: int = 3
  t_emb_dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict):
    """Builds the network from config.model.mlp_hidden/mlp_layers/t_emb_dim and the dtype."""
    m = config.model
    if m.mlp_hidden < 1 or m.mlp_layers < 1:
      raise ValueError(
          f'config.model.mlp_hidden and config.model.mlp_layers must be positive, got '
          f'{m.mlp_hidden} and {m.mlp_layers}.'
      )
    return cls(hidden=m.mlp_hidden, layers=m.mlp_layers, t_emb_dim=m.t_emb_dim,
               dtype=compute_dtype(config))


class MLPGenerator(_TimeConditionedMLP):
  """x0 predictor: [x_{t+1}, emb(t), z] -> ``layers`` x (Dense + SiLU) -> Dense(D).

  The output is unconstrained (the toy data lie well outside [-1, 1]). The network has no
  dropout or batch statistics, so ``train`` changes nothing; it is accepted for the common
  generator interface.
  """

  @nn.compact
  def __call__(
      self, x_tp1: jax.Array, t: jax.Array, z: jax.Array, train: bool = False
  ) -> jax.Array:
    """Predicts x0.

    Args:
      x_tp1: (B, D) the noisier sample x_{t+1}.
      t: (B,) int target levels in 0..T-1.
      z: (B, nz) latent.
      train: unused (no dropout or normalisation statistics).

    Returns:
      (B, D) float32 x0 prediction.
    """
    del train
    temb = timestep_embedding(t, self.t_emb_dim)
    h = jnp.concatenate([x_tp1.astype(jnp.float32), temb, z.astype(jnp.float32)], axis=-1)
    for _ in range(self.layers):
      h = nn.silu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    return nn.Dense(x_tp1.shape[-1], dtype=self.dtype)(h).astype(jnp.float32)


class MLPDiscriminator(_TimeConditionedMLP):
  """Pair critic: [x_t, x_{t+1}, emb(t)] -> ``layers`` x (Dense + LeakyReLU(0.2)) -> Dense(1)."""

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, x_tp1: jax.Array) -> jax.Array:
    """Scores a pair.

    Args:
      x_t: (B, D) the less noisy sample.
      t: (B,) int levels in 0..T-1.
      x_tp1: (B, D) the noisier sample.

    Returns:
      (B, 1) float32 logits (real pair > 0).
    """
    temb = timestep_embedding(t, self.t_emb_dim)
    h = jnp.concatenate([x_t.astype(jnp.float32), x_tp1.astype(jnp.float32), temb], axis=-1)
    for _ in range(self.layers):
      h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype)(h), negative_slope=0.2)
    return nn.Dense(1, dtype=self.dtype)(h).astype(jnp.float32)
