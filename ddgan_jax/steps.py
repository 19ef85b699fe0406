"""The DDGAN training iteration as a pure function ``(state, batch) -> (state, metrics)``.

One iteration is a discriminator step followed by a generator step (the reference's order):

  D step: t ~ U{0..T-1} per example, (x_t, x_{t+1}) ~ q; real loss softplus(-D(x_t, t, x_{t+1}));
          every ``lazy_reg`` iterations (step % lazy_reg == 0) add R1 = gamma/2 mean_b |dD/dx_t|^2;
          fake: x0' = stop_gradient(G(x_{t+1}, t, z)), x' ~ q(x_t | x_{t+1}, x0'), loss
          softplus(D(x', t, x_{t+1})).
  G step: fresh t, pair and z from the same real batch, with the updated D; loss
          softplus(-D(x', t, x_{t+1})); then EMA <- decay EMA + (1 - decay) G.

All random numbers come from fold_in(state.rng, state.step) at the global batch shape, so the
result does not depend on how the batch is sharded.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ddgan_jax import diffusion
from ddgan_jax.train_state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def r1_weight(config: ml_collections.ConfigDict) -> float:
  """gamma/2, times lazy_reg when ``r1_scale_by_interval`` (StyleGAN2); the reference does not."""
  t = config.training
  scale = t.lazy_reg if t.r1_scale_by_interval else 1
  return 0.5 * t.r1_gamma * scale


def _draw_pairs(
    rng: jax.Array, schedule: diffusion.Schedule, x0: jax.Array, nz: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Draws t (B,), a forward pair (x_t, x_{t+1}), a latent z (B, nz) and a posterior key."""
  rng_t, rng_pair, rng_z, rng_post = jax.random.split(rng, 4)
  batch = x0.shape[0]
  t = jax.random.randint(rng_t, (batch,), 0, schedule.num_timesteps, jnp.int32)
  x_t, x_tp1 = diffusion.q_sample_pairs(rng_pair, schedule, x0, t)
  z = jax.random.normal(rng_z, (batch, nz), jnp.float32)
  return t, x_t, x_tp1, z, rng_post


def make_train_step(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> StepFn:
  """Builds one training iteration (not jitted; see ``train.compile_train_step``).

  Args:
    config: the full config (training.r1_gamma, lazy_reg, r1_scale_by_interval; optim.ema_decay;
      model.nz, model.dropout).
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    step(state, batch) -> (new state, metrics). ``batch['image']`` is the global real batch
    (B, ...) in [-1, 1] (rescaled to [0, 1] when config.model.centered is False); metrics are float32 scalars: d_loss, d_loss_real, d_loss_fake,
    d_real, d_fake (mean logits), r1 (penalty, 0 when not applied), r1_applied (0/1), g_loss,
    g_grad_norm, d_grad_norm, g_param_norm, d_param_norm, lr_g, lr_d.
  """
  nz = config.model.nz
  lazy_reg = config.training.lazy_reg
  r1_coef = r1_weight(config)
  ema_decay = config.optim.ema_decay
  use_dropout = config.model.dropout > 0
  centered = config.model.centered

  def g_apply(state: TrainState, g_params: Any, x_tp1, t, z, rng) -> jax.Array:
    variables = {'params': g_params}
    if state.g_constants:
      variables['constants'] = state.g_constants
    rngs = {'dropout': rng} if use_dropout else None
    return generator.apply(variables, x_tp1, t, z, train=True, rngs=rngs).astype(jnp.float32)

  def d_apply(d_params, x_t, t, x_tp1) -> jax.Array:
    return discriminator.apply({'params': d_params}, x_t, t, x_tp1).astype(jnp.float32)

  def d_loss_fn(d_params, state: TrainState, t, x_t, x_tp1, x0_pred, rng_post):
    real_logits = d_apply(d_params, x_t, t, x_tp1)
    loss_real = jnp.mean(jax.nn.softplus(-real_logits))
    x_pos = diffusion.sample_posterior(rng_post, schedule, x0_pred, x_tp1, t)
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

  def d_step(state: TrainState, x0: jax.Array, rng: jax.Array):
    """Gradients of the D loss; R1 has its own lax.cond returning its gradients, because
    differentiating through a cond makes XLA carry R1's second-order residuals every step."""
    rng_pairs, rng_drop = jax.random.split(rng)
    t, x_t, x_tp1, z, rng_post = _draw_pairs(rng_pairs, schedule, x0, nz)
    x0_pred = jax.lax.stop_gradient(g_apply(state, state.g_params, x_tp1, t, z, rng_drop))
    grads, metrics = jax.grad(d_loss_fn, has_aux=True)(
        state.d_params, state, t, x_t, x_tp1, x0_pred, rng_post)
    apply_r1 = state.step % lazy_reg == 0
    r1, r1_grads = jax.lax.cond(
        apply_r1,
        lambda ops: jax.value_and_grad(r1_penalty)(*ops),
        lambda ops: (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, ops[0])),
        (state.d_params, x_t, t, x_tp1),
    )
    grads = jax.tree.map(jnp.add, grads, r1_grads)
    metrics.update(r1=r1, r1_applied=apply_r1.astype(jnp.float32),
                   d_loss=metrics['d_loss_real'] + metrics['d_loss_fake'] + r1)
    return grads, metrics

  def g_loss_fn(g_params, state: TrainState, x0: jax.Array, rng: jax.Array):
    rng_pairs, rng_drop = jax.random.split(rng)
    t, _, x_tp1, z, rng_post = _draw_pairs(rng_pairs, schedule, x0, nz)
    x0_pred = g_apply(state, g_params, x_tp1, t, z, rng_drop)
    x_pos = diffusion.sample_posterior(rng_post, schedule, x0_pred, x_tp1, t)
    loss = jnp.mean(jax.nn.softplus(-d_apply(state.d_params, x_pos, t, x_tp1)))
    return loss

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    x0 = batch['image'].astype(jnp.float32)
    if not centered:
      x0 = (x0 + 1.0) / 2.0  # The pipelines yield [-1, 1]; centered=False trains on [0, 1].
    rng_d, rng_g = jax.random.split(jax.random.fold_in(state.rng, state.step))

    d_grads, metrics = d_step(state, x0, rng_d)
    d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    state = state.replace(d_params=d_params, d_opt_state=d_opt_state)

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params, state, x0, rng_g)
    g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    ema_params = jax.tree.map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, g_params
    )
    metrics.update(
        g_loss=g_loss,
        g_grad_norm=optax.global_norm(g_grads),
        d_grad_norm=optax.global_norm(d_grads),
        g_param_norm=optax.global_norm(g_params),
        d_param_norm=optax.global_norm(d_params),
        lr_g=jnp.asarray(state.g_lr(state.step)),
        lr_d=jnp.asarray(state.d_lr(state.step)),
    )
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state, ema_params=ema_params
    )
    return new_state, {k: v.astype(jnp.float32) for k, v in metrics.items()}

  return step
