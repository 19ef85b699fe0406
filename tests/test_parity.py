"""One training iteration equals the official ``train_ddgan.py`` loop body, draws injected.

The official PyTorch loop (``tests/official_loop.py``) and ``steps.make_iteration`` start from the
same perturbed tiny networks, take the same t, noises, z and posterior noise, and are compared
after 1 and 3 iterations: D and G parameters, both Adam moments of both optimisers and the EMA.
R1 applies at iterations 0 and 2 (lazy_reg 2). Ours runs in float32; the official loop runs in
float64, the reference without float32 rounding (``official_loop.run_official`` says why). The
comparison is per tensor: max|ours - official| <= 1e-5 max|official|.

Ours differs from the official code on purpose in two places, and these tests show the effect:
- Our D step uses stop_gradient(G(...)); the official back-propagates into G there and then
  discards those gradients with netG.zero_grad(). Equal results show it changes nothing.
- With ``r1_scale_by_interval`` ours multiplies gamma by lazy_reg: at r1_gamma / lazy_reg it equals
  the plain official run, and the official run with r1_gamma * lazy_reg (the fixture's
  ``r1_by_interval`` run) differs from ours without the scaling.

``tests/data/official_iteration.npz`` holds the official results (see tests/data/README.md); the
live test reruns the official code when torch and ``DDGAN_OFFICIAL_SRC`` are available.
"""

import functools
import os

import jax
import jax.numpy as jnp
import flax
import numpy as np
import optax
import pytest

from ddgan_jax import convert
from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import steps
from ddgan_jax import train_state as train_state_lib
from tests import official_loop

FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'official_iteration.npz')
TOLERANCE = 1e-5  # Of each tensor's largest official magnitude.
ZERO_FRACTION = 1e-9  # Of the group's largest magnitude: below it a tensor counts as zero.


def _nhwc(a: np.ndarray) -> jax.Array:
  return jnp.asarray(np.moveaxis(a.astype(np.float32), 1, -1))


@functools.cache
def _compiled(r1_scale_by_interval: bool):
  """The config, the jitted iteration and the optimisers (static parts of the state, so reused).

  With ``r1_scale_by_interval``, r1_gamma is divided by lazy_reg: the R1 weight is then the plain
  run's, and so is the program, which the persistent compilation cache (tests/conftest.py) serves
  instead of compiling it again.
  """
  config = official_loop.parity_config(r1_scale_by_interval)
  if r1_scale_by_interval:
    config.training.r1_gamma /= config.training.lazy_reg
  g, d = models.build_generator(config), models.build_discriminator(config)
  iteration = steps.make_iteration(config, g, d, diffusion.schedule_from_config(config))
  lrs = [train_state_lib.learning_rate_schedule(lr, config, config.training.batch_size)
         for lr in (config.optim.lr_g, config.optim.lr_d)]
  return (config, jax.jit(iteration, static_argnums=3), lrs,
          [train_state_lib.make_optimizer(lr, config) for lr in lrs])


def _initial_state(init, step: int, r1_scale_by_interval: bool) -> train_state_lib.TrainState:
  """Our state holding the converted official initial weights, Adam and EMA fresh."""
  config, _, (g_lr, d_lr), (g_tx, d_tx) = _compiled(r1_scale_by_interval)
  g_params = convert.generator_params_from_torch(init['G'], config)['params']
  d_params = convert.discriminator_params_from_torch(init['D'], config)['params']
  return train_state_lib.TrainState(
      step=jnp.asarray(step, jnp.int32), g_params=g_params, g_constants={}, d_params=d_params,
      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params), ema_params=g_params,
      rng=jax.random.PRNGKey(0), g_tx=g_tx, d_tx=d_tx, g_lr=g_lr, d_lr=d_lr)


def _noise(draws, i: int) -> steps.IterationNoise:
  def half(h):
    return steps.StepNoise(
        t=jnp.asarray(draws[f'{h}_t'][i], jnp.int32),
        eps=_nhwc(draws[f'{h}_eps'][i]),
        eps_next=_nhwc(draws[f'{h}_eps_next'][i]),
        z=jnp.asarray(draws[f'{h}_z'][i], jnp.float32),
        posterior=_nhwc(draws[f'{h}_posterior'][i]),
        dropout_rng=jax.random.PRNGKey(0))

  return steps.IterationNoise(d=half('d'), g=half('g'))


def _adam(opt_state) -> optax.ScaleByAdamState:
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  return next(x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x))


def run_ours(init, draws, r1_scale_by_interval=False, first_step=0, iterations=3):
  """Our iterations from the official initial weights; {n: groups} as ``run_official``."""
  config, iteration = _compiled(r1_scale_by_interval)[:2]
  state, x0 = _initial_state(init, first_step, r1_scale_by_interval), _nhwc(draws['x0'])
  out = {}
  for i in range(iterations):
    state, _ = iteration(state, x0, _noise(draws, i), steps.applies_r1(config, first_step + i))
    g_adam, d_adam = _adam(state.g_opt_state), _adam(state.d_opt_state)
    out[i + 1] = jax.device_get({
        'G': state.g_params, 'D': state.d_params, 'G_ema': state.ema_params,
        'G_exp_avg': g_adam.mu, 'G_exp_avg_sq': g_adam.nu,
        'D_exp_avg': d_adam.mu, 'D_exp_avg_sq': d_adam.nu})
  return out


def compare(ours, official) -> tuple[dict[str, float], list[str]]:
  """Compares groups of tensors (official ones as state dicts, ours as Flax trees).

  Args:
    ours: {group: Flax parameter tree}.
    official: {group: official state dict}, for the same groups or a subset.

  Returns:
    Per group, the largest over its tensors of max|ours - official| / max|official|, with the
    second moments (exp_avg_sq) taken as their square roots, the RMS gradients Adam divides by,
    so that every group is compared in the units of parameters or gradients; and the
    names of numerically zero official tensors (all values below ZERO_FRACTION of the group's
    largest) where ours are not numerically zero. Such tensors are the attention key biases'
    Adam moments: their gradient is zero in exact arithmetic (softmax ignores a constant added
    to every key), so both sides hold only rounding noise there.
  """
  config = official_loop.parity_config()
  errors, nonzero = {}, []
  for group, state_dict in official.items():
    fn = (convert.generator_params_from_torch if group.startswith('G')
          else convert.discriminator_params_from_torch)
    theirs = flax.traverse_util.flatten_dict(fn(state_dict, config)['params'], sep='/')
    mine = flax.traverse_util.flatten_dict(ours[group], sep='/')
    if group.endswith('exp_avg_sq'):
      theirs, mine = ({k: np.sqrt(v) for k, v in d.items()} for d in (theirs, mine))
    zero = ZERO_FRACTION * max(float(np.max(np.abs(v))) for v in theirs.values())
    errors[group] = 0.0
    for name, b in theirs.items():
      a, scale = np.asarray(mine[name], np.float64), float(np.max(np.abs(b)))
      if scale < zero:
        if np.max(np.abs(a)) >= zero:
          nonzero.append(f'{group}/{name}')
        continue
      errors[group] = max(errors[group], float(np.max(np.abs(a - b))) / scale)
  return errors, nonzero


def relative_errors(ours, official) -> dict[str, float]:
  return compare(ours, official)[0]


def assert_parity(ours, official) -> None:
  errors, nonzero = compare(ours, official)
  bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
  assert not bad, f'Relative errors above {TOLERANCE}: {bad}'
  assert not nonzero, f'Not numerically zero where the official values are: {nonzero}'


def _check_all(init, draws, runs):
  """The whole comparison, and that wrong settings fail the same comparison."""
  ours = run_ours(init, draws)
  scaled = run_ours(init, draws, r1_scale_by_interval=True)
  for n in official_loop.SNAPSHOTS:
    assert_parity(ours[n], runs['plain'][n])
    assert_parity(scaled[n], runs['plain'][n])
  last = official_loop.ITERATIONS
  # The scaling matters: the unscaled run does not match the official run with r1_gamma * lazy_reg.
  assert relative_errors(ours[last], runs['r1_by_interval'][last])['D_exp_avg'] > TOLERANCE
  # Skipping R1 at iteration 0 (starting at step 1) is detected after one iteration.
  shifted = run_ours(init, draws, first_step=1, iterations=1)
  assert relative_errors(shifted[1], runs['plain'][1])['D_exp_avg'] > TOLERANCE
  # The old EMA start (decay * G_0 + (1 - decay) * G_1) is detected.
  decay = official_loop.parity_config().optim.ema_decay
  old_ema = jax.tree.map(lambda g0, g1: decay * g0 + (1 - decay) * g1,
                         _initial_state(init, 0, False).g_params, ours[1]['G'])
  assert relative_errors({'G_ema': old_ema}, {'G_ema': runs['plain'][1]['G_ema']})[
      'G_ema'] > TOLERANCE


def test_iteration_matches_official_fixture():
  init, draws, runs = official_loop.read_fixture(FIXTURE)
  _check_all(init, draws, runs)


def test_iteration_matches_official_live():
  pytest.importorskip('torch', reason='the live official run needs PyTorch')
  src = os.environ.get('DDGAN_OFFICIAL_SRC')
  if not src:
    pytest.skip('DDGAN_OFFICIAL_SRC (a folder with the official score_sde/ and EMA.py) is not set')
  official = official_loop.load_official(src)
  config = official_loop.parity_config()
  init = official_loop.initial_state_dicts(official, config)
  draws = official_loop.make_draws(config)
  gamma, lazy_reg = config.training.r1_gamma, config.training.lazy_reg
  runs = {'plain': official_loop.run_official(official, config, init, draws, gamma),
          'r1_by_interval': official_loop.run_official(official, config, init, draws,
                                                       gamma * lazy_reg)}
  for run in runs.values():
    for groups in run.values():
      assert groups.pop('no_grad') == [], 'every G parameter gets a gradient, so the EMA skips none'
  _check_all(init, draws, runs)
