"""The training iteration against hand computations, the LR schedule, EMA, lazy R1 and sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddgan_jax import diffusion
from ddgan_jax import input_pipeline
from ddgan_jax import models
from ddgan_jax import steps
from ddgan_jax import train
from ddgan_jax import train_state as train_state_lib
from ddgan_jax.models import mlp
from tests import tolerances
from tests.configs import tiny


class LinearG(nn.Module):
  """x0 = w * x_{t+1}: a generator whose output is easy to compute by hand."""

  @nn.compact
  def __call__(self, x_tp1, t, z, train=False):
    del t, z, train
    w = self.param('w', lambda k, s: jnp.full(s, 0.5), x_tp1.shape[-1:])
    return w * x_tp1


class QuadraticD(nn.Module):
  """D = sum_j a_j x_t,j^2 + sum_j b_j x_tp1,j + c, so dD/dx_t = 2 a x_t."""

  @nn.compact
  def __call__(self, x_t, t, x_tp1):
    del t
    a = self.param('a', lambda k, s: jnp.asarray([0.3, -0.2]), (2,))
    b = self.param('b', lambda k, s: jnp.asarray([0.1, 0.4]), (2,))
    c = self.param('c', lambda k, s: jnp.asarray([0.05]), (1,))
    return (jnp.sum(a * x_t**2, -1) + jnp.sum(b * x_tp1, -1))[:, None] + c


def _softplus(x):
  return np.logaddexp(0.0, x)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _draws(rng, schedule, x0, nz):
  """The draws of one half-step, following the documented key scheme."""
  rng_pairs, _ = jax.random.split(rng)
  rng_t, rng_pair, rng_z, rng_post = jax.random.split(rng_pairs, 4)
  t = jax.random.randint(rng_t, (x0.shape[0],), 0, schedule.num_timesteps, jnp.int32)
  x_t, x_tp1 = diffusion.q_sample_pairs(rng_pair, schedule, jnp.asarray(x0), t)
  noise = jax.random.normal(rng_post, x0.shape)
  del rng_z
  return np.asarray(t), np.asarray(x_t, np.float64), np.asarray(x_tp1, np.float64), np.asarray(
      noise, np.float64)


def _posterior(schedule, x0, x_tp1, t, noise):
  s = diffusion.schedule_as_dict(schedule)
  c1 = s['posterior_mean_coef1'][t][:, None]
  c2 = s['posterior_mean_coef2'][t][:, None]
  std = np.exp(0.5 * s['posterior_log_variance_clipped'][t])[:, None] * (t != 0)[:, None]
  return c1 * x0 + c2 * x_tp1 + std * noise


@pytest.mark.parametrize('scale_by_interval', [False, True])
def test_one_iteration_matches_hand_computation(scale_by_interval):
  config = tiny.get_config()
  config.training.r1_gamma = 0.7
  config.training.lazy_reg = 3
  config.training.r1_scale_by_interval = scale_by_interval
  config.training.batch_size = 8
  schedule = diffusion.schedule_from_config(config)
  g, d = LinearG(), QuadraticD()
  state = train_state_lib.create_train_state(jax.random.PRNGKey(3), config, g, d, 1000)
  x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(9), (8, 2)))
  step = jax.jit(steps.make_train_step(config, g, d, schedule), static_argnums=2)
  new_state, m = step(state, {'image': x0}, True)

  rng_d, rng_g = jax.random.split(jax.random.fold_in(state.rng, 0))
  a, b, c = (np.asarray(state.d_params[k], np.float64) for k in 'abc')
  w = np.asarray(state.g_params['w'], np.float64)
  disc = lambda p, xt, xtp1: (p[0] * xt**2).sum(-1) + (p[1] * xtp1).sum(-1) + p[2][0]
  # D step: real pair, closed-form R1 (dD/dx_t = 2 a x_t), fake pair through the posterior.
  t, x_t, x_tp1, noise = _draws(rng_d, schedule, x0, config.model.nz)
  real = disc((a, b, c), x_t, x_tp1)
  gamma = 0.7 * (3 if scale_by_interval else 1)
  r1 = gamma / 2 * np.mean(np.sum((2 * a * x_t) ** 2, -1))
  x_pos = _posterior(schedule, w * x_tp1, x_tp1, t, noise)
  fake = disc((a, b, c), x_pos, x_tp1)
  np.testing.assert_allclose(m['d_loss_real'], _softplus(-real).mean(), rtol=1e-5)
  np.testing.assert_allclose(m['d_loss_fake'], _softplus(fake).mean(), rtol=1e-5)
  np.testing.assert_allclose(m['r1'], r1, rtol=1e-5)
  np.testing.assert_allclose(m['d_loss'], _softplus(-real).mean() + _softplus(fake).mean() + r1,
                             rtol=1e-5)
  np.testing.assert_allclose([m['d_real'], m['d_fake']], [real.mean(), fake.mean()], rtol=1e-5)
  # Gradients of the D loss by hand; x_pos carries no gradient to D's inputs through G.
  sr, sf = -_sigmoid(-real)[:, None] / 8, _sigmoid(fake)[:, None] / 8
  grad_a = (sr * x_t**2).sum(0) + (sf * x_pos**2).sum(0) + gamma / 2 * np.mean(8 * a * x_t**2, 0)
  grad_b = (sr * x_tp1).sum(0) + (sf * x_tp1).sum(0)
  grad_c = np.asarray([sr.sum() + sf.sum()])
  grads = {'a': grad_a, 'b': grad_b, 'c': grad_c}
  np.testing.assert_allclose(m['d_grad_norm'],
                             np.sqrt(sum((v**2).sum() for v in grads.values())), rtol=1e-5)
  # First Adam step: p - lr g / (|g| + eps).
  for k, grad in grads.items():
    expected = np.asarray(state.d_params[k]) - 1.25e-4 * grad / (np.abs(grad) + 1e-8)
    np.testing.assert_allclose(new_state.d_params[k], expected, rtol=1e-6, atol=1e-9)
  # G step: fresh draws, the updated D, non-saturating loss.
  a2, b2, c2 = (np.asarray(new_state.d_params[k], np.float64) for k in 'abc')
  t, _, x_tp1, noise = _draws(rng_g, schedule, x0, config.model.nz)
  x_pos = _posterior(schedule, w * x_tp1, x_tp1, t, noise)
  np.testing.assert_allclose(m['g_loss'], _softplus(-disc((a2, b2, c2), x_pos, x_tp1)).mean(),
                             rtol=1e-5)
  # The first EMA update takes the new parameters, as the reference's EMA does.
  np.testing.assert_array_equal(new_state.ema_params['w'], new_state.g_params['w'])
  assert not np.allclose(new_state.g_params['w'], w)
  assert int(new_state.step) == 1


def test_extra_d_steps_equal_successive_d_updates():
  """training.d_steps = 3: three D updates, each with its own draws and R1 on the first only,
  then the G step against the thrice-updated D; the first two draws do not depend on d_steps."""
  config = tiny.get_config()
  config.optim.lr_decay = False
  config.training.lazy_reg = 2
  schedule = diffusion.schedule_from_config(config)
  g, d = LinearG(), QuadraticD()
  state = train_state_lib.create_train_state(jax.random.PRNGKey(3), config, g, d, 1000)
  # G frozen, so that one D update per call composes into the same D updates.
  frozen = optax.set_to_zero()
  state = state.replace(g_tx=frozen, g_opt_state=frozen.init(state.g_params))
  x0 = jnp.asarray(jax.random.normal(jax.random.PRNGKey(9), (8, 2)))
  rng = jax.random.PRNGKey(5)
  noise = steps.draw_iteration_noise(rng, schedule, x0.shape, config.model.nz, d_steps=3)
  single = steps.draw_iteration_noise(rng, schedule, x0.shape, config.model.nz)
  tolerances.assert_trees_close((noise.d, noise.g), (single.d, single.g), 0.0, 'first draws')
  assert single.d_extra == () and len(noise.d_extra) == 2
  eps = [np.asarray(n.eps) for n in (noise.d, noise.g, *noise.d_extra)]
  assert all(not np.allclose(a, b) for i, a in enumerate(eps) for b in eps[i + 1:])
  iteration = jax.jit(steps.make_iteration(config, g, d, schedule), static_argnums=3)

  new_state, m = iteration(state, x0, noise, True)
  composed, first_metrics = state, None
  for k, d_noise in enumerate((noise.d, *noise.d_extra)):
    one = steps.IterationNoise(d=d_noise, g=noise.g)
    composed, mk = iteration(composed, x0, one, k == 0)
    first_metrics = first_metrics or mk
    assert float(mk['r1_applied']) == (k == 0)
  tolerances.assert_trees_close((new_state.d_params, new_state.d_opt_state),
                                (composed.d_params, composed.d_opt_state), 1e-6, 'D')
  for k in ('d_loss', 'd_real', 'd_fake', 'r1', 'r1_applied', 'd_grad_norm'):
    np.testing.assert_allclose(m[k], first_metrics[k], rtol=1e-6, err_msg=k)
  np.testing.assert_allclose(m['g_loss'], mk['g_loss'], rtol=1e-6)
  assert not np.allclose(m['g_loss'], first_metrics['g_loss'])
  assert int(new_state.step) == 1


def test_lazy_r1_schedule_and_interval():
  config = tiny.get_config()
  config.training.lazy_reg = 3
  g, d = models.build_generator(config), models.build_discriminator(config)
  state = train_state_lib.create_train_state(jax.random.PRNGKey(0), config, g, d, 1000)
  step = jax.jit(steps.make_train_step(config, g, d, diffusion.schedule_from_config(config)),
                 static_argnums=2)
  applied, r1 = [], []
  x0 = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
  for i in range(7):
    state, m = step(state, {'image': x0}, steps.applies_r1(config, i))
    applied.append(float(m['r1_applied']))
    r1.append(float(m['r1']))
  assert applied == [1, 0, 0, 1, 0, 0, 1]
  assert all(v > 0 for v, on in zip(r1, applied) if on)
  assert all(v == 0 for v, on in zip(r1, applied) if not on)
  assert steps.r1_weight(config) == pytest.approx(0.01)
  config.training.r1_scale_by_interval = True
  assert steps.r1_weight(config) == pytest.approx(0.03)


def test_learning_rate_per_epoch_cosine():
  config = tiny.get_config()
  config.training.batch_size = 10
  config.training.num_epochs = 4
  config.optim.lr_min = 1e-5
  lr = train_state_lib.learning_rate_schedule(1e-3, config, num_examples=105)  # 10 steps/epoch.
  expected = {0: 1e-3, 9: 1e-3, 10: 1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi / 4)) / 2,
              20: (1e-3 + 1e-5) / 2, 39: 1e-5 + (1e-3 - 1e-5) * (1 + np.cos(3 * np.pi / 4)) / 2,
              40: 1e-5}
  for s, v in expected.items():
    np.testing.assert_allclose(lr(jnp.asarray(s)), v, rtol=1e-6, err_msg=f'step {s}')
  config.optim.lr_decay = False
  const = train_state_lib.learning_rate_schedule(1e-3, config, num_examples=105)
  assert float(const(jnp.asarray(35))) == pytest.approx(1e-3)
  assert train_state_lib.steps_per_epoch(5, 10) == 1
  config.training.num_steps = -1
  assert train_state_lib.total_steps(config, 105) == 40


def test_bad_training_config_is_rejected():
  config = tiny.get_config()
  config.training.lazy_reg = 0
  config.training.d_steps = 0
  config.optim.ema_decay = 1.5
  config.training.num_steps = 0
  with pytest.raises(ValueError, match='lazy_reg.*\n.*d_steps.*\n.*ema_decay'):
    train_state_lib.check_config(config)
  with pytest.raises(ValueError, match='num_steps'):
    train_state_lib.total_steps(config, 100)
  with pytest.raises(ValueError, match='multiple of the device count'):
    input_pipeline.check_global_batch(tiny.get_config(), 3, 1)
  bad = tiny.get_config()
  bad.model.mlp_layers = 0
  with pytest.raises(ValueError, match='mlp_layers'):
    mlp.MLPGenerator.from_config(bad)


def test_mlp_shapes_and_bfloat16():
  config = tiny.get_config()
  config.training.dtype = 'bfloat16'
  g, d = mlp.MLPGenerator.from_config(config), mlp.MLPDiscriminator.from_config(config)
  assert g.dtype == jnp.bfloat16 and g.layers == 2 and g.hidden == 32
  x, t, z = jnp.ones((5, 2)), jnp.arange(5) % 4, jnp.ones((5, 8))
  gv = g.init(jax.random.PRNGKey(0), x, t, z)
  dv = d.init(jax.random.PRNGKey(0), x, t, x)
  assert g.apply(gv, x, t, z).shape == (5, 2) and g.apply(gv, x, t, z).dtype == jnp.float32
  assert d.apply(dv, x, t, x).shape == (5, 1)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves((gv, dv)))
  # Unconstrained output: a large input scale gives outputs beyond [-1, 1].
  assert float(jnp.abs(g.apply(gv, 50 * x, t, z)).max()) > 1.0


def _run_steps(config, mesh, num):
  g, d = models.build_generator(config), models.build_discriminator(config)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.jit(
      lambda r: train_state_lib.create_train_state(r, config, g, d, 1000),
      out_shardings=replicated,
  )(jax.random.PRNGKey(1))
  data = np.random.default_rng(0).normal(size=(num, 16, 2)).astype(np.float32)
  step = train.compile_train_step(
      steps.make_train_step(config, g, d, diffusion.schedule_from_config(config)), mesh, state,
      train.global_batch({'image': data[0]}, mesh, 16))
  for i in range(num):
    state, metrics = step(state, train.global_batch({'image': data[i]}, mesh, 16),
                          steps.applies_r1(config, i))
  return jax.device_get(state), jax.device_get(metrics)


def test_eight_devices_match_one_device_and_bfloat16_keeps_float32_state():
  assert jax.device_count() == 8
  config = tiny.get_config()
  config.training.lazy_reg = 2
  one, m1 = _run_steps(config, jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',)), 3)
  eight, m8 = _run_steps(config, jax.sharding.Mesh(np.asarray(jax.devices()), ('data',)), 3)
  params = lambda s: (s.g_params, s.d_params, s.ema_params)
  tolerances.assert_trees_close(params(eight), params(one), 1e-5, 'params')
  # Adam's moments hold (squared) gradients, whose rounding differs with the reduction order.
  tolerances.assert_trees_close((eight.g_opt_state, eight.d_opt_state),
                                (one.g_opt_state, one.d_opt_state), 1e-4, 'adam')
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-5, err_msg=k)
  config.training.dtype = 'bfloat16'
  half, m16 = _run_steps(config, jax.sharding.Mesh(np.asarray(jax.devices()), ('data',)), 3)
  assert {a.dtype for a in jax.tree.leaves((half.g_params, half.d_params, half.ema_params,
                                            half.g_opt_state, half.d_opt_state))} <= {
                                                np.dtype('float32'), np.dtype('int32')}
  for k in ('d_loss', 'g_loss'):
    np.testing.assert_allclose(m16[k], m1[k], rtol=3e-2, err_msg=k)
