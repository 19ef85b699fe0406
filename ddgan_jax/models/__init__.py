"""DDGAN networks (Flax Linen, NHWC) and the builders that pick them from a config.

Interfaces every network here follows:
  generator:     G.apply(variables, x_tp1, t, z, train=False) -> x0 prediction, shaped like x_tp1.
  discriminator: D.apply(variables, x_t, t, x_tp1) -> logits (B, 1).
where x has shape (B, H, W, C) for images or (B, D) for the 2-D toy data, t is (B,) int32 in
0..T-1 and z is (B, nz).
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype networks compute in, from ``config.training.dtype``."""
  name = config.training.dtype
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.training.dtype must be 'float32' or 'bfloat16', got {name!r}.")
  return jnp.dtype(name)


def build_generator(config: ml_collections.ConfigDict) -> nn.Module:
  """The generator named by ``config.model.generator`` ('ncsnpp' or 'mlp')."""
  name = config.model.generator
  if name == 'ncsnpp':
    from ddgan_jax.models import ncsnpp  # pylint: disable=g-import-not-at-top
    return ncsnpp.NCSNpp.from_config(config)
  if name == 'mlp':
    from ddgan_jax.models import mlp  # pylint: disable=g-import-not-at-top
    return mlp.MLPGenerator.from_config(config)
  raise ValueError(f"Unknown config.model.generator {name!r}: use 'ncsnpp' or 'mlp'.")


def build_discriminator(config: ml_collections.ConfigDict) -> nn.Module:
  """The discriminator named by ``config.model.discriminator`` ('small', 'large' or 'mlp')."""
  name = config.model.discriminator
  if name in ('small', 'large'):
    from ddgan_jax.models import discriminator  # pylint: disable=g-import-not-at-top
    return discriminator.from_config(config)
  if name == 'mlp':
    from ddgan_jax.models import mlp  # pylint: disable=g-import-not-at-top
    return mlp.MLPDiscriminator.from_config(config)
  raise ValueError(f"Unknown config.model.discriminator {name!r}: use 'small', 'large' or 'mlp'.")


def check_image_size(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError unless the image networks can take ``config.model.image_size``.

  NCSN++ halves the resolution len(ch_mult) - 1 times, the small discriminator 3 times and the
  large one 6 times, so the size must be a multiple of the largest of those powers of two.
  """
  m = config.model
  need = 1
  if m.generator == 'ncsnpp':
    need = max(need, 2 ** (len(m.ch_mult) - 1))
  need = max(need, {'small': 8, 'large': 64}.get(m.discriminator, 1))
  if m.image_size < need or m.image_size % need:
    raise ValueError(
        f'config.model.image_size={m.image_size} does not fit the networks: generator '
        f'{m.generator!r} with ch_mult={tuple(m.ch_mult)} and discriminator {m.discriminator!r} '
        f'need a positive multiple of {need}. Change config.model.image_size or the architecture.'
    )
