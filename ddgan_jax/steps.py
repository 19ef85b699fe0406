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
only the first, and the D metrics are the first's. G does not change during the D steps, so their
fakes come from one batched G forward. It is off the reference's recipe: the digits
quickstart uses it because one D step per G step left D behind at the noisy levels (README,
"Why these settings").

The iteration is built from pure pieces: ``draw_iteration_noise`` makes every random draw from
fold_in(state.rng, state.step) at the global batch shape (so the result does not depend on how
the batch is sharded), and ``make_updates`` gives the R1 terms, the D step and the G step that
consume them. ``make_iteration`` composes them with injected draws, which lets the iteration be
compared with the official PyTorch loop (tests/test_parity.py); ``make_train_step`` gives the
same iteration as programs that draw their own noise (``TrainStep``).

Whether R1 applies is decided on the host, ``applies_r1(config, step)``: R1 and its gradient are
a program of their own, whose result the iteration program adds to the first D step's gradient
(zeros at the iterations without R1). A ``lax.cond`` on the traced step would run R1 inside the
iteration, but XLA's CPU backend runs the convolution weight gradients inside a conditional (or
loop) body about 20 times slower than at top level, so an R1 step cost four plain steps.
"""

from collections.abc import Callable
import dataclasses
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


@flax.struct.dataclass
class R1Terms:
  """The R1 penalty of an iteration's first D step, as that step adds it.

  Attributes:
    value: () float32 penalty, r1_weight * mean_b |dD/dx_t|^2 (0 when not applied).
    grads: its gradient with respect to D's parameters (a tree like ``state.d_params``).
    applied: () float32, 1 when R1 applies to this iteration, else 0.
  """

  value: jax.Array
  grads: Any
  applied: jax.Array


def no_r1(d_params: Any) -> R1Terms:
  """The R1 terms of an iteration without R1: zeros shaped like ``d_params``."""
  zeros = jax.tree.map(jnp.zeros_like, d_params)
  return R1Terms(value=jnp.zeros((), jnp.float32), grads=zeros, applied=jnp.zeros((), jnp.float32))


@dataclasses.dataclass(frozen=True)
class Updates:
  """The parts of an iteration, with injected draws (``make_updates``). ``x0`` (B, ...) float32
  is the real batch; a ``noise`` is a ``StepNoise``.

  Attributes:
    r1_terms: (state, x0, noise) -> R1Terms: R1 at the real pairs of a D step's draws, with its
      gradient, at the current D.
    fakes: (state, x0, (noise_1, ..., noise_K)) -> K fakes (B, ...) x' ~ q(x_t | x_{t+1},
      G(x_{t+1}, t, z)) for K D steps at once, no gradient. G does not change during the D
      steps, so one forward over the K batches serves all of them (one per step with dropout,
      whose keys are per step).
    d_update: (state, x0, noise, x_pos, r1) -> (state, metrics): one D step (Adam included) with
      the fakes ``x_pos`` (B, ...), its gradient plus ``r1.grads``; metrics d_loss (with
      ``r1.value``), d_loss_real, d_loss_fake, d_real, d_fake (mean logits), r1, r1_applied and
      d_grad_norm.
    g_update: (state, x0, noise) -> (state, metrics): the G step against the current D, the EMA
      and step + 1; metrics g_loss, g_grad_norm, g_param_norm, d_param_norm, lr_g and lr_d. The
      EMA after the step-0 update equals the new generator parameters, as in the reference,
      whose EMA copy is created after the first optimiser step.
  """

  r1_terms: Callable[[TrainState, jax.Array, StepNoise], R1Terms]
  fakes: Callable[[TrainState, jax.Array, tuple[StepNoise, ...]], tuple[jax.Array, ...]]
  d_update: Callable[[TrainState, jax.Array, StepNoise, jax.Array, R1Terms],
                     tuple[TrainState, Metrics]]
  g_update: Callable[[TrainState, jax.Array, StepNoise], tuple[TrainState, Metrics]]


def make_updates(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> Updates:
  """Builds the parts of an iteration with injected random draws (not jitted).

  Args:
    config: the full config (training.r1_gamma, lazy_reg, r1_scale_by_interval; optim.ema_decay;
      model.dropout).
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    The ``Updates``.
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

  def r1_terms(state: TrainState, x0: jax.Array, noise: StepNoise) -> R1Terms:
    x_t, x_tp1 = diffusion.q_pairs_from_noise(schedule, x0, noise.t, noise.eps, noise.eps_next)
    value, grads = jax.value_and_grad(r1_penalty)(state.d_params, x_t, noise.t, x_tp1)
    return R1Terms(value=value, grads=grads, applied=jnp.ones((), jnp.float32))

  def fakes(state: TrainState, x0: jax.Array,
            noises: tuple[StepNoise, ...]) -> tuple[jax.Array, ...]:
    x_tp1 = [diffusion.q_pairs_from_noise(schedule, x0, n.t, n.eps, n.eps_next)[1]
             for n in noises]
    if use_dropout or len(noises) == 1:
      x0_pred = [g_apply(state, state.g_params, x, n.t, n.z, n.dropout_rng)
                 for x, n in zip(x_tp1, noises)]
    else:
      # One forward over (B, K) merged batch-major, so that a batch sharded over devices stays
      # sharded (a K-major merge, as vmap makes, had every device compute every fake).
      merge = lambda arrays: jnp.stack(arrays, axis=1).reshape((-1, *arrays[0].shape[1:]))
      out = g_apply(state, state.g_params, merge(x_tp1), merge([n.t for n in noises]),
                    merge([n.z for n in noises]), None)
      out = out.reshape((x0.shape[0], len(noises), *x0.shape[1:]))
      x0_pred = [out[:, k] for k in range(len(noises))]
    return tuple(
        diffusion.posterior_from_noise(schedule, jax.lax.stop_gradient(p), x, n.t, n.posterior)
        for p, x, n in zip(x0_pred, x_tp1, noises))

  def d_update(state: TrainState, x0: jax.Array, noise: StepNoise, x_pos: jax.Array,
               r1: R1Terms):
    t = noise.t
    x_t, x_tp1 = diffusion.q_pairs_from_noise(schedule, x0, t, noise.eps, noise.eps_next)
    grads, metrics = jax.grad(d_loss_fn, has_aux=True)(state.d_params, t, x_t, x_tp1, x_pos)
    grads = jax.tree.map(jnp.add, grads, r1.grads)
    metrics.update(r1=r1.value, r1_applied=r1.applied,
                   d_loss=metrics['d_loss_real'] + metrics['d_loss_fake'] + r1.value,
                   d_grad_norm=optax.global_norm(grads))
    d_updates, d_opt_state = state.d_tx.update(grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)
    return state.replace(d_params=d_params, d_opt_state=d_opt_state), metrics

  def g_loss_fn(g_params, state: TrainState, x0: jax.Array, noise: StepNoise):
    t = noise.t
    _, x_tp1 = diffusion.q_pairs_from_noise(schedule, x0, t, noise.eps, noise.eps_next)
    x0_pred = g_apply(state, g_params, x_tp1, t, noise.z, noise.dropout_rng)
    x_pos = diffusion.posterior_from_noise(schedule, x0_pred, x_tp1, t, noise.posterior)
    return jnp.mean(jax.nn.softplus(-d_apply(state.d_params, x_pos, t, x_tp1)))

  def g_update(state: TrainState, x0: jax.Array, noise: StepNoise):
    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params, state, x0, noise)
    g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    first = state.step == 0
    keep, take = jnp.where(first, 0.0, ema_decay), jnp.where(first, 1.0, 1.0 - ema_decay)
    ema_params = jax.tree.map(lambda e, p: keep * e + take * p, state.ema_params, g_params)
    metrics = {
        'g_loss': g_loss,
        'g_grad_norm': optax.global_norm(g_grads),
        'g_param_norm': optax.global_norm(g_params),
        'd_param_norm': optax.global_norm(state.d_params),
        'lr_g': jnp.asarray(state.g_lr(state.step)),
        'lr_d': jnp.asarray(state.d_lr(state.step)),
    }
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state, ema_params=ema_params
    )
    return new_state, metrics

  return Updates(r1_terms=r1_terms, fakes=fakes, d_update=d_update, g_update=g_update)


def _compose(updates: Updates, state: TrainState, x0: jax.Array, noise: IterationNoise,
             r1: R1Terms) -> tuple[TrainState, Metrics]:
  """The D steps (``r1`` joins the first) and the G step; the first D step's metrics."""
  d_noise = (noise.d, *noise.d_extra)
  x_pos = updates.fakes(state, x0, d_noise)
  for k, noise_k in enumerate(d_noise):
    state, d_metrics = updates.d_update(state, x0, noise_k, x_pos[k],
                                        r1 if k == 0 else no_r1(state.d_params))
    if k == 0:
      metrics = d_metrics
  state, g_metrics = updates.g_update(state, x0, noise.g)
  return state, {k: jnp.asarray(v).astype(jnp.float32) for k, v in {**metrics, **g_metrics}.items()}


def make_iteration(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> IterationFn:
  """Builds one training iteration with injected random draws (not jitted).

  Args:
    config: the full config (as ``make_updates``). The number of D steps follows
      ``noise.d_extra``.
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    iteration(state, x0, noise, apply_r1) -> (new state, metrics): ``x0`` (B, ...) float32 is the
    real batch in the training range, ``noise`` the draws for it (see ``draw_iteration_noise``),
    ``apply_r1`` a Python bool (``applies_r1(config, state.step)`` in training) that adds R1 to
    the first D step. The metrics are float32 scalars: the first D step's and the G step's (see
    ``make_updates``).
  """
  updates = make_updates(config, generator, discriminator, schedule)

  def iteration(
      state: TrainState, x0: jax.Array, noise: IterationNoise, apply_r1: bool
  ) -> tuple[TrainState, Metrics]:
    r1 = updates.r1_terms(state, x0, noise.d) if apply_r1 else no_r1(state.d_params)
    return _compose(updates, state, x0, noise, r1)

  return iteration


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """One training iteration, ``step(state, batch, apply_r1) -> (state, metrics)``, made of pure
  programs that ``train.compile_train_step`` compiles one by one.

  ``iteration_step`` is the whole iteration, with the R1 terms as an input; ``r1_step`` computes
  them at the iterations with R1 and ``zero_r1_step`` gives zeros at the others. Compiling the
  R1 double backward on its own, instead of the whole iteration twice (with and without R1),
  compiles every network gradient once: on 2 CPU cores the digits quickstart's programs compile
  in about half the time (BENCHMARKS.md), and a step runs as fast as before.

  Attributes:
    r1_step: (state, batch) -> R1Terms, from the first D step's draws.
    zero_r1_step: (state,) -> R1Terms of zeros.
    iteration_step: (state, batch, r1) -> (state, metrics), the metrics of ``make_iteration``.
  """

  r1_step: Callable[[TrainState, Batch], R1Terms]
  zero_r1_step: Callable[[TrainState], R1Terms]
  iteration_step: Callable[[TrainState, Batch, R1Terms], tuple[TrainState, Metrics]]

  def __call__(
      self, state: TrainState, batch: Batch, apply_r1: bool
  ) -> tuple[TrainState, Metrics]:
    r1 = self.r1_step(state, batch) if apply_r1 else self.zero_r1_step(state)
    return self.iteration_step(state, batch, r1)


def make_train_step(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    schedule: diffusion.Schedule,
) -> TrainStep:
  """Builds one training iteration (not jitted; see ``train.compile_train_step``).

  Args:
    config: the full config (as ``make_updates``, plus model.nz, model.centered and
      training.d_steps).
    generator: G, called as G.apply(vars, x_tp1, t, z, train=True).
    discriminator: D, called as D.apply({'params': p}, x_t, t, x_tp1) -> (B, 1).
    schedule: the noise schedule.

  Returns:
    A ``TrainStep``: ``step(state, batch, apply_r1) -> (new state, metrics)`` is
    ``make_iteration``'s iteration with the draws of
    ``draw_iteration_noise(fold_in(state.rng, state.step), ...)``. ``batch['image']`` is the
    global real batch (B, ...) in [-1, 1] (rescaled to [0, 1] when config.model.centered is
    False); ``apply_r1`` is ``applies_r1(config, step)``.
  """
  nz = config.model.nz
  centered = config.model.centered
  d_steps = config.training.d_steps
  updates = make_updates(config, generator, discriminator, schedule)
  # Traced once for all D steps (XLA still inlines each call).
  updates = dataclasses.replace(updates, d_update=jax.jit(updates.d_update))

  def real_batch(batch: Batch) -> jax.Array:
    x0 = batch['image'].astype(jnp.float32)
    if not centered:
      x0 = (x0 + 1.0) / 2.0  # The pipelines yield [-1, 1]; centered=False trains on [0, 1].
    return x0

  def draws(state: TrainState, x0: jax.Array) -> IterationNoise:
    rng = jax.random.fold_in(state.rng, state.step)
    return draw_iteration_noise(rng, schedule, x0.shape, nz, d_steps)

  def r1_step(state: TrainState, batch: Batch) -> R1Terms:
    x0 = real_batch(batch)
    return updates.r1_terms(state, x0, draws(state, x0).d)

  def zero_r1_step(state: TrainState) -> R1Terms:
    return no_r1(state.d_params)

  def iteration_step(state: TrainState, batch: Batch, r1: R1Terms):
    x0 = real_batch(batch)
    return _compose(updates, state, x0, draws(state, x0), r1)

  return TrainStep(r1_step=r1_step, zero_r1_step=zero_r1_step, iteration_step=iteration_step)
