"""The DDGAN training iteration as a pure function ``(state, batch) -> (state, metrics)``.

One iteration is a discriminator step followed by a generator step (the reference's order):

  D step: t ~ U{0..T-1} per example, (x_t, x_{t+1}) ~ q; real loss softplus(-D(x_t, t, x_{t+1}));
          every ``lazy_reg`` iterations (step % lazy_reg == 0) add R1 = gamma/2 mean_b |dD/dx_t|^2;
          fake: x0' = stop_gradient(G(x_{t+1}, t, z)), x' ~ q(x_t | x_{t+1}, x0'), loss
          softplus(D(x', t, x_{t+1})).
  G step: fresh t, pair and z from the same real batch, with the updated D; loss
          softplus(-D(x', t, x_{t+1})); then EMA <- decay EMA + (1 - decay) G, except at step 0,
          where the EMA takes G's new parameters (the reference creates its EMA copy after the
          first optimiser step).

With ``training.d_steps`` = k > 1 (n_critic; the reference has 1), the iteration makes k D steps
before the G step, each with its own draws of t, pairs and z from the same real batch; R1 joins
only the first, and the D metrics are the first's. It is off the reference's recipe: the digits
quickstart uses it because one D step per G step left D behind at the noisy levels (README,
"Why these settings").

The iteration is built from two pure pieces: ``draw_iteration_noise`` makes every random draw
from fold_in(state.rng, state.step) at the global batch shape (so the result does not depend on
how the batch is sharded), and ``make_iteration`` consumes them. Injecting the draws lets the
iteration be compared with the official PyTorch loop (tests/test_parity.py).

Whether R1 applies is a static argument, ``applies_r1(config, step)``, decided on the host: the
iteration compiles into two programs, with and without R1. A ``lax.cond`` on the traced step would
give one program, but XLA's CPU backend runs the convolution weight gradients inside a conditional
(or loop) body about 20 times slower than at top level, so an R1 step cost four plain steps.
"""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ddgan_jax import diffusion
from ddgan_jax.train_state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, bool], tuple[TrainState, Metrics]]


@flax.struct.dataclass
class StepNoise:
  """The random draws of one half-iteration (the D step or the G step).

  Attributes:
    t: (B,) int32 target levels in 0..T-1.
    eps: (B, ...) standard normal noise of x_t given x0.
    eps_next: (B, ...) standard normal noise of x_{t+1} given x_t.
    z: (B, nz) generator latents.
    posterior: (B, ...) standard normal noise of the posterior draw x' ~ q(x_t | x_{t+1}, x0').
    dropout_rng: PRNG key for the generator's dropout (used only when model.dropout > 0).
  """

  t: jax.Array
  eps: jax.Array
  eps_next: jax.Array
  z: jax.Array
  posterior: jax.Array
  dropout_rng: jax.Array


@flax.struct.dataclass
class IterationNoise:
  """The draws of one iteration: ``d`` for the (first) D step, ``g`` for the G step, and
  ``d_extra`` for the further D steps of ``training.d_steps`` > 1 (empty by default)."""

  d: StepNoise
  g: StepNoise
  d_extra: tuple[StepNoise, ...] = ()


def r1_weight(config: ml_collections.ConfigDict) -> float:
  """gamma/2, times lazy_reg when ``r1_scale_by_interval`` (StyleGAN2); the reference does not."""
  t = config.training
  scale = t.lazy_reg if t.r1_scale_by_interval else 1
  return 0.5 * t.r1_gamma * scale


def _draw_step_noise(
    rng: jax.Array, num_timesteps: int, x0_shape: tuple[int, ...], nz: int
) -> StepNoise:
  rng_pairs, rng_drop = jax.random.split(rng)
  rng_t, rng_pair, rng_z, rng_post = jax.random.split(rng_pairs, 4)
  rng_eps, rng_eps_next = jax.random.split(rng_pair)
  batch = x0_shape[0]
  normal = lambda key, shape: jax.random.normal(key, shape, jnp.float32)
  return StepNoise(
      t=jax.random.randint(rng_t, (batch,), 0, num_timesteps, jnp.int32),
      eps=normal(rng_eps, x0_shape),
      eps_next=normal(rng_eps_next, x0_shape),
      z=normal(rng_z, (batch, nz)),
      posterior=normal(rng_post, x0_shape),
      dropout_rng=rng_drop,
  )


def draw_iteration_noise(
    rng: jax.Array,
    schedule: diffusion.Schedule,
    x0_shape: tuple[int, ...],
    nz: int,
    d_steps: int = 1,
) -> IterationNoise:
  """Draws everything random in one iteration, at the global batch shape.

  Args:
    rng: the iteration's key, fold_in(state.rng, state.step) in ``make_train_step``.
    schedule: the noise schedule (for T).
    x0_shape: (B, ...) shape of the real batch.
    nz: latent size.
    d_steps: D steps in the iteration (``training.d_steps``).

  Returns:
    Independent draws for the D steps and the G step (float32 noise, int32 levels). The keys are
    split(rng, d_steps + 1): [0] the first D step, [1] the G step, the rest the further D steps,
    so the first two do not depend on ``d_steps``.
  """
  keys = jax.random.split(rng, d_steps + 1)
  draw = lambda key: _draw_step_noise(key, schedule.num_timesteps, x0_shape, nz)
  return IterationNoise(d=draw(keys[0]), g=draw(keys[1]),
                        d_extra=tuple(draw(key) for key in keys[2:]))


IterationFn = Callable[[TrainState, jax.Array, IterationNoise, bool], tuple[TrainState, Metrics]]


def applies_r1(config: ml_collections.ConfigDict, step: int) -> bool:
  """Whether iteration ``step`` (0-based) adds R1: every ``training.lazy_reg``-th, from step 0."""
  return step % config.training.lazy_reg == 0


def make_iteration(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> IterationFn:
  """Builds one training iteration with injected random draws (not jitted).

  Args:
    config: the full config (training.r1_gamma, lazy_reg, r1_scale_by_interval; optim.ema_decay;
      model.dropout). The number of D steps follows ``noise.d_extra``.
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    iteration(state, x0, noise, apply_r1) -> (new state, metrics): ``x0`` (B, ...) float32 is the
    real batch in the training range, ``noise`` the draws for it (see ``draw_iteration_noise``),
    ``apply_r1`` a Python bool (static under jit; ``applies_r1(config, state.step)`` in training)
    that adds R1 to the first D step.
    The EMA after the step-0 iteration equals the new generator parameters, as in the reference,
    whose EMA copy is created after the first optimiser step. Metrics are float32 scalars:
    d_loss, d_loss_real, d_loss_fake, d_real, d_fake (mean logits), r1 (penalty, 0 when not
    applied), r1_applied (0/1), g_loss, g_grad_norm, d_grad_norm, g_param_norm, d_param_norm,
    lr_g, lr_d.
  """
  r1_coef = r1_weight(config)
  ema_decay = config.optim.ema_decay
  use_dropout = config.model.dropout > 0

  def g_apply(state: TrainState, g_params: Any, x_tp1, t, z, rng) -> jax.Array:
    variables = {'params': g_params}
    if state.g_constants:
      variables['constants'] = state.g_constants
    rngs = {'dropout': rng} if use_dropout else None
    return generator.apply(variables, x_tp1, t, z, train=True, rngs=rngs).astype(jnp.float32)

  def d_apply(d_params, x_t, t, x_tp1) -> jax.Array:
    return discriminator.apply({'params': d_params}, x_t, t, x_tp1).astype(jnp.float32)

  def d_loss_fn(d_params, t, x_t, x_tp1, x_pos):
    real_logits = d_apply(d_params, x_t, t, x_tp1)
    loss_real = jnp.mean(jax.nn.softplus(-real_logits))
    fake_logits = d_apply(d_params, x_pos, t, x_tp1)
    loss_fake = jnp.mean(jax.nn.softplus(fake_logits))
    metrics = {
        'd_loss_real': loss_real,
        'd_loss_fake': loss_fake,
        'd_real': jnp.mean(real_logits),
        'd_fake': jnp.mean(fake_logits),
    }
    return loss_real + loss_fake, metrics

  def r1_penalty(d_params, x_t, t, x_tp1):
    grad_x = jax.grad(lambda x: d_apply(d_params, x, t, x_tp1).sum())(x_t)
    return r1_coef * jnp.mean(jnp.sum(jnp.square(grad_x).reshape(grad_x.shape[0], -1), axis=1))

  def d_step(state: TrainState, x0: jax.Array, noise: StepNoise, apply_r1: bool):
    """Gradients of the D loss, plus R1's when ``apply_r1``."""
    t = noise.t
    x_t, x_tp1 = diffusion.q_pairs_from_noise(schedule, x0, t, noise.eps, noise.eps_next)
    x0_pred = jax.lax.stop_gradient(
        g_apply(state, state.g_params, x_tp1, t, noise.z, noise.dropout_rng))
    x_pos = diffusion.posterior_from_noise(schedule, x0_pred, x_tp1, t, noise.posterior)
    grads, metrics = jax.grad(d_loss_fn, has_aux=True)(state.d_params, t, x_t, x_tp1, x_pos)
    r1 = jnp.zeros((), jnp.float32)
    if apply_r1:
      r1, r1_grads = jax.value_and_grad(r1_penalty)(state.d_params, x_t, t, x_tp1)
      grads = jax.tree.map(jnp.add, grads, r1_grads)
    metrics.update(r1=r1, r1_applied=jnp.float32(apply_r1),
                   d_loss=metrics['d_loss_real'] + metrics['d_loss_fake'] + r1)
    return grads, metrics

  def g_loss_fn(g_params, state: TrainState, x0: jax.Array, noise: StepNoise):
    t = noise.t
    _, x_tp1 = diffusion.q_pairs_from_noise(schedule, x0, t, noise.eps, noise.eps_next)
    x0_pred = g_apply(state, g_params, x_tp1, t, noise.z, noise.dropout_rng)
    x_pos = diffusion.posterior_from_noise(schedule, x0_pred, x_tp1, t, noise.posterior)
    return jnp.mean(jax.nn.softplus(-d_apply(state.d_params, x_pos, t, x_tp1)))

  def iteration(
      state: TrainState, x0: jax.Array, noise: IterationNoise, apply_r1: bool
  ) -> tuple[TrainState, Metrics]:
    for k, d_noise in enumerate((noise.d, *noise.d_extra)):
      d_grads, d_metrics = d_step(state, x0, d_noise, apply_r1 and k == 0)
      if k == 0:
        metrics = dict(d_metrics, d_grad_norm=optax.global_norm(d_grads))
      d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
      d_params = optax.apply_updates(state.d_params, d_updates)
      state = state.replace(d_params=d_params, d_opt_state=d_opt_state)

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params, state, x0, noise.g)
    g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    first = state.step == 0
    keep, take = jnp.where(first, 0.0, ema_decay), jnp.where(first, 1.0, 1.0 - ema_decay)
    ema_params = jax.tree.map(lambda e, p: keep * e + take * p, state.ema_params, g_params)
    metrics.update(
        g_loss=g_loss,
        g_grad_norm=optax.global_norm(g_grads),
        g_param_norm=optax.global_norm(g_params),
        d_param_norm=optax.global_norm(d_params),
        lr_g=jnp.asarray(state.g_lr(state.step)),
        lr_d=jnp.asarray(state.d_lr(state.step)),
    )
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state, ema_params=ema_params
    )
    return new_state, {k: v.astype(jnp.float32) for k, v in metrics.items()}

  return iteration


def make_train_step(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> StepFn:
  """Builds one training iteration (not jitted; see ``train.compile_train_step``).

  Args:
    config: the full config (as ``make_iteration``, plus model.nz and model.centered).
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    step(state, batch, apply_r1) -> (new state, metrics): ``make_iteration``'s iteration with the
    draws of ``draw_iteration_noise(fold_in(state.rng, state.step), ...)``. ``batch['image']`` is
    the global real batch (B, ...) in [-1, 1] (rescaled to [0, 1] when config.model.centered is
    False); ``apply_r1`` is ``applies_r1(config, step)``; the metrics are those of
    ``make_iteration``.
  """
  nz = config.model.nz
  centered = config.model.centered
  d_steps = config.training.d_steps
  iteration = make_iteration(config, generator, discriminator, schedule)

  def train_step(state: TrainState, batch: Batch, apply_r1: bool) -> tuple[TrainState, Metrics]:
    x0 = batch['image'].astype(jnp.float32)
    if not centered:
      x0 = (x0 + 1.0) / 2.0  # The pipelines yield [-1, 1]; centered=False trains on [0, 1].
    noise = draw_iteration_noise(
        jax.random.fold_in(state.rng, state.step), schedule, x0.shape, nz, d_steps)
    return iteration(state, x0, noise, apply_r1)

  return train_step
