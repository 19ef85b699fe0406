"""DDGAN training state, the two Adam optimisers and the per-epoch cosine learning-rate schedule."""

from collections.abc import Callable
import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import optax

from ddgan_jax import rng as rng_lib

Params = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree (the optimisers are static fields).

  Attributes:
    step: () int32, training iterations done (one D step plus one G step each).
    g_params: generator parameters (float32).
    g_constants: the generator's non-trainable 'constants' collection (may be empty).
    d_params: discriminator parameters (float32).
    g_opt_state: optax state of ``g_tx``.
    d_opt_state: optax state of ``d_tx``.
    ema_params: exponential moving average of ``g_params``.
    rng: (2,) uint32 base key; iteration i draws from fold_in(rng, i).
    g_tx: generator optimiser.
    d_tx: discriminator optimiser.
    g_lr: generator learning rate as a function of the step (for logging).
    d_lr: discriminator learning rate as a function of the step (for logging).
  """

  step: jax.Array
  g_params: Params
  g_constants: Params
  d_params: Params
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  ema_params: Params
  rng: jax.Array
  g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  g_lr: optax.Schedule = flax.struct.field(pytree_node=False)
  d_lr: optax.Schedule = flax.struct.field(pytree_node=False)

  def generator_variables(self, ema: bool = False) -> dict[str, Params]:
    """The variables dict for ``G.apply``: params (or their EMA) plus any constants."""
    variables = {'params': self.ema_params if ema else self.g_params}
    if self.g_constants:
      variables['constants'] = self.g_constants
    return variables


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  """Full batches per epoch, at least 1 (the reference drops the last partial batch)."""
  return max(1, num_examples // global_batch)


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """``config.training.num_steps``, or num_epochs full epochs when it is -1."""
  num_steps = config.training.num_steps
  if num_steps == -1:
    return config.training.num_epochs * steps_per_epoch(num_examples, config.training.batch_size)
  if num_steps < 1:
    raise ValueError(
        f'config.training.num_steps must be a positive number of steps or -1 (num_epochs '
        f'epochs), got {num_steps}.'
    )
  return num_steps


def learning_rate_schedule(
    base_lr: float, config: ml_collections.ConfigDict, num_examples: int
) -> optax.Schedule:
  """Cosine decay stepped once per epoch, as the reference's CosineAnnealingLR.

  lr(step) = lr_min + (base_lr - lr_min) (1 + cos(pi e / num_epochs)) / 2 with
  e = step // steps_per_epoch; constant ``base_lr`` when ``config.optim.lr_decay`` is False.

  Args:
    base_lr: the learning rate at epoch 0.
    config: the full config (optim.lr_decay, optim.lr_min, training.num_epochs, batch_size).
    num_examples: training-set size, to count steps per epoch.

  Returns:
    A function from the optimiser step count to the learning rate.
  """
  if not config.optim.lr_decay:
    return optax.constant_schedule(base_lr)
  per_epoch = steps_per_epoch(num_examples, config.training.batch_size)
  num_epochs = config.training.num_epochs
  lr_min = config.optim.lr_min

  def schedule(count):
    epoch = (count // per_epoch).astype(jnp.float32)
    return lr_min + (base_lr - lr_min) * 0.5 * (1.0 + jnp.cos(math.pi * epoch / num_epochs))

  return schedule


def make_optimizer(
    lr: optax.Schedule, config: ml_collections.ConfigDict
) -> optax.GradientTransformation:
  """Adam with the reference's betas and eps (PyTorch semantics: eps outside the square root)."""
  o = config.optim
  return optax.adam(lr, b1=o.beta1, b2=o.beta2, eps=o.eps)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with a fix for training settings that cannot work."""
  t, o = config.training, config.optim
  problems = []
  if t.batch_size < 1:
    problems.append(f'config.training.batch_size must be positive, got {t.batch_size}.')
  if t.num_epochs < 1:
    problems.append(f'config.training.num_epochs must be positive, got {t.num_epochs}.')
  if t.lazy_reg < 1:
    problems.append(f'config.training.lazy_reg must be >= 1 (1 = R1 every step), got {t.lazy_reg}.')
  if t.d_steps < 1:
    problems.append(f'config.training.d_steps must be >= 1 (D steps per G step), got {t.d_steps}.')
  if t.r1_gamma < 0:
    problems.append(f'config.training.r1_gamma must be >= 0, got {t.r1_gamma}.')
  for name in ('log_every', 'sample_every'):
    if t[name] < 1:
      problems.append(f'config.training.{name} must be positive, got {t[name]}.')
  for name in ('profile_steps', 'eval_every'):
    if t[name] < 0:
      problems.append(f'config.training.{name} must be >= 0 (0 turns it off), got {t[name]}.')
  if not 0.0 <= o.ema_decay < 1.0:
    problems.append(f'config.optim.ema_decay must be in [0, 1), got {o.ema_decay}.')
  for name in ('lr_g', 'lr_d', 'lr_min', 'eps'):
    if o[name] <= 0:
      problems.append(f'config.optim.{name} must be positive, got {o[name]}.')
  if config.checkpoint.every_steps < 1 or config.checkpoint.max_to_keep < 1:
    problems.append(
        'config.checkpoint.every_steps and config.checkpoint.max_to_keep must be positive, got '
        f'{config.checkpoint.every_steps} and {config.checkpoint.max_to_keep}.'
    )
  keep = config.checkpoint.keep_every_steps
  if keep < 0 or (keep and keep % max(config.checkpoint.every_steps, 1)):
    problems.append(
        f'config.checkpoint.keep_every_steps={keep} must be 0 (keep only the newest) or a '
        f'multiple of config.checkpoint.every_steps={config.checkpoint.every_steps}, so that '
        'the checkpoints it keeps are written.'
    )
  if problems:
    raise ValueError('Invalid training config:\n  ' + '\n  '.join(problems))


def data_shape(config: ml_collections.ConfigDict, batch: int) -> tuple[int, ...]:
  """Shape of a data batch: (B, H, W, C) for images, (B, D) for the 2-D toy data."""
  m = config.model
  if config.data.dataset == 'toy2d':
    return (batch, m.num_channels)
  return (batch, m.image_size, m.image_size, m.num_channels)


def create_train_state(
    rng: jax.Array,
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    num_examples: int,
) -> TrainState:
  """Initialises both networks, their optimisers and the EMA (equal to G at start).

  Args:
    rng: the run's root key, ``PRNGKey(config.seed)``. The networks are initialised from its
      'init' stream and the state's base key is its 'train' stream (``ddgan_jax.rng``).
    config: the full config.
    generator: the generator module.
    discriminator: the discriminator module.
    num_examples: training-set size (for the per-epoch schedule).

  Returns:
    The step-0 state.
  """
  check_config(config)
  rng_g, rng_d = jax.random.split(rng_lib.stream(rng, 'init'))
  rng_state = rng_lib.stream(rng, 'train')
  x = jnp.zeros(data_shape(config, 1), jnp.float32)
  t = jnp.zeros((1,), jnp.int32)
  z = jnp.zeros((1, config.model.nz), jnp.float32)
  g_vars = generator.init({'params': rng_g, 'dropout': rng_g}, x, t, z, train=False)
  g_vars = flax.core.unfreeze(g_vars)
  g_params = g_vars.pop('params')
  unexpected = set(g_vars) - {'constants'}
  if unexpected:
    raise ValueError(
        f'The generator has variable collections {sorted(unexpected)}; the trainer supports only '
        "'params' and 'constants'."
    )
  d_params = flax.core.unfreeze(discriminator.init(rng_d, x, t, x))['params']
  g_lr = learning_rate_schedule(config.optim.lr_g, config, num_examples)
  d_lr = learning_rate_schedule(config.optim.lr_d, config, num_examples)
  g_tx, d_tx = make_optimizer(g_lr, config), make_optimizer(d_lr, config)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_constants=g_vars.get('constants', {}),
      d_params=d_params,
      g_opt_state=g_tx.init(g_params),
      d_opt_state=d_tx.init(d_params),
      ema_params=jax.tree.map(jnp.copy, g_params),
      rng=rng_state,
      g_tx=g_tx,
      d_tx=d_tx,
      g_lr=g_lr,
      d_lr=d_lr,
  )


def state_initializer(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    num_examples: int,
) -> Callable[[jax.Array], TrainState]:
  """``create_train_state`` with everything but the root key bound: ``rng -> TrainState``."""
  return functools.partial(create_train_state, config=config, generator=generator,
                           discriminator=discriminator, num_examples=num_examples)


def abstract_train_state(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    num_examples: int,
    mesh: Mesh | None = None,
) -> TrainState:
  """The step-0 state's shapes and dtypes as ShapeDtypeStructs, computed without running it.

  Args:
    config: the full config.
    generator: the generator module.
    discriminator: the discriminator module.
    num_examples: training-set size (it sets only the learning-rate schedule, not a shape).
    mesh: when given, every leaf carries a sharding replicated over it, the layout that the
      compiled programs and checkpoint restores use.

  Returns:
    A TrainState whose leaves are ``jax.ShapeDtypeStruct``s.
  """
  abstract = jax.eval_shape(state_initializer(config, generator, discriminator, num_examples),
                            jax.random.PRNGKey(config.seed))
  sharding = None if mesh is None else NamedSharding(mesh, P())
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                      abstract)
