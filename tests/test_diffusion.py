"""Noise schedule, forward pairs, posterior and sampler against closed forms and the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddgan_jax import diffusion

# Values of the official code (shared/reference/README.md), VP schedule, beta in [0.1, 20].
REF_T4 = {
    'a_s_cum': [1, 0.722319, 0.280492, 0.058557, 0.006572],
    'sigmas_cum': [0, 0.691560, 0.959856, 0.998284, 0.999978],
    'posterior_mean_coef1': [1.0, 0.665778, 0.269191, 0.057822],
    'posterior_mean_coef2': [0, 0.201576, 0.193001, 0.111852],
    'posterior_variance': [0, 0.440819, 0.884202, 0.984061],
    'posterior_log_variance_clipped': [-46.0517, -0.819121, -0.123069, -0.016068],
}
REF_T8_A_S_CUM = [1, .918452, .722319, .486426, .280492, .138497, .058557, .021200, .006572]


def _closed_form(num_timesteps, beta_min=0.1, beta_max=20.0):
  """The discretisation written out independently in float64."""
  t = np.linspace(0, 1, num_timesteps + 1) * (1 - 1e-3) + 1e-3
  alpha_bar = np.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)
  betas = np.r_[1e-8, 1 - alpha_bar[1:] / alpha_bar[:-1]]
  a_s_cum = np.cumprod(np.sqrt(1 - betas))
  return betas, a_s_cum


@pytest.mark.parametrize('key', sorted(REF_T4))
def test_t4_matches_official_values(key):
  s = diffusion.schedule_as_dict(diffusion.get_schedule(4))
  atol = 1e-3 if key == 'posterior_log_variance_clipped' else 1e-5
  np.testing.assert_allclose(s[key], REF_T4[key], atol=atol, rtol=1e-5)


def test_t8_and_t2_and_t1_match_official_levels():
  s8 = diffusion.schedule_as_dict(diffusion.get_schedule(8))
  np.testing.assert_allclose(s8['a_s_cum'], REF_T8_A_S_CUM, atol=1e-5)
  s2 = diffusion.schedule_as_dict(diffusion.get_schedule(2))
  np.testing.assert_allclose(s2['a_s_cum'], np.array(REF_T4['a_s_cum'])[[0, 2, 4]], atol=1e-5)
  for num_timesteps in (1, 2, 4, 8):
    s = diffusion.schedule_as_dict(diffusion.get_schedule(num_timesteps))
    betas, a_s_cum = _closed_form(num_timesteps)
    np.testing.assert_allclose(s['betas'], betas, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(s['a_s_cum'], a_s_cum, atol=1e-5)
    np.testing.assert_allclose(s['sigmas_cum'] ** 2 + s['a_s_cum'] ** 2, 1.0, atol=1e-5)
    assert s['betas'].dtype == np.float32 and s['betas'].shape == (num_timesteps + 1,)
    assert s['posterior_variance'].shape == (num_timesteps,)


def test_posterior_is_the_gaussian_product():
  """coef1, coef2 and the variance solve q(x_t | x_{t+1}, x0) for the forward marginals."""
  s = diffusion.schedule_as_dict(diffusion.get_schedule(4))
  for t in range(1, 4):
    abar_prev, abar = s['a_s_cum'][t] ** 2, s['a_s_cum'][t + 1] ** 2
    beta = s['betas'][t + 1]
    # Posterior precision = 1 / (1 - abar_prev) + (1 - beta) / beta.
    var = 1.0 / (1.0 / (1 - abar_prev) + (1 - beta) / beta)
    np.testing.assert_allclose(s['posterior_variance'][t], var, rtol=1e-4)
    np.testing.assert_allclose(s['posterior_mean_coef1'][t],
                               var * np.sqrt(abar_prev) / (1 - abar_prev), rtol=1e-4)
    np.testing.assert_allclose(s['posterior_mean_coef2'][t],
                               var * np.sqrt(1 - beta) / beta, rtol=1e-4)


def test_geometric_schedule_is_valid():
  s = diffusion.schedule_as_dict(diffusion.get_schedule(4, kind='geometric'))
  assert np.all(s['betas'] > 0) and np.all(s['betas'] < 1)
  assert np.all(np.diff(s['a_s_cum']) < 0)
  assert np.all(np.isfinite(s['posterior_log_variance_clipped']))


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_timesteps=0), 'positive integer'),
    (dict(num_timesteps=4, beta_min=5.0, beta_max=1.0), 'beta_min'),
    (dict(num_timesteps=4, kind='cosine'), 'Unknown noise schedule'),
])
def test_bad_schedule_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    diffusion.get_schedule(**kwargs)


def test_posterior_returns_x0_exactly_at_t0():
  s = diffusion.get_schedule(4)
  x0 = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
  x_tp1 = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
  out = diffusion.sample_posterior(jax.random.key(2), s, x0, x_tp1, jnp.zeros((3,), jnp.int32))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x0))


def test_posterior_mean_and_std():
  s = diffusion.get_schedule(4)
  n = 200_000
  x0 = jnp.full((n, 1), 0.5)
  x_tp1 = jnp.full((n, 1), -0.25)
  t = jnp.full((n,), 2, jnp.int32)
  out = np.asarray(diffusion.sample_posterior(jax.random.key(3), s, x0, x_tp1, t))
  d = diffusion.schedule_as_dict(s)
  mean = d['posterior_mean_coef1'][2] * 0.5 + d['posterior_mean_coef2'][2] * -0.25
  assert abs(out.mean() - mean) < 5e-3
  assert abs(out.std() - np.sqrt(d['posterior_variance'][2])) < 5e-3


def test_q_sample_pairs_statistics():
  s = diffusion.get_schedule(4)
  d = diffusion.schedule_as_dict(s)
  n = 200_000
  x0 = jnp.ones((n, 1))
  t = jnp.full((n,), 1, jnp.int32)
  x_t, x_tp1 = (np.asarray(a) for a in diffusion.q_sample_pairs(jax.random.key(4), s, x0, t))
  assert abs(x_t.mean() - d['a_s_cum'][1]) < 5e-3
  assert abs(x_t.std() - d['sigmas_cum'][1]) < 5e-3
  assert abs(x_tp1.mean() - d['a_s_cum'][2]) < 5e-3
  assert abs(x_tp1.std() - d['sigmas_cum'][2]) < 5e-3
  # x_{t+1} = a_s[t+1] x_t + sigmas[t+1] eps: the regression slope on x_t is a_s[t+1].
  slope = np.cov(x_t[:, 0], x_tp1[:, 0])[0, 1] / x_t.var()
  assert abs(slope - d['a_s'][2]) < 1e-2


def test_sampler_runs_the_chain_with_the_official_indices():
  """A generator that records t returns x0 = t-dependent constant; the chain ends on it."""
  s = diffusion.get_schedule(4)
  seen = []

  def generator_fn(x, t, z):
    seen.append(t)
    assert z.shape == (5, 7)
    return jnp.zeros_like(x) + t[:, None].astype(x.dtype)

  out = jax.jit(lambda r: diffusion.sample(r, s, generator_fn, (5, 3), nz=7))(jax.random.key(0))
  # The last step (t = 0) returns the generator's x0 = 0 exactly.
  np.testing.assert_array_equal(np.asarray(out), np.zeros((5, 3)))
  assert len(seen) == 1  # Traced once inside fori_loop.


def test_sampler_is_deterministic_and_depends_on_key():
  s = diffusion.get_schedule(2)
  fn = lambda x, t, z: jnp.tanh(x + z[:, :1])
  a = diffusion.sample(jax.random.key(0), s, fn, (4, 2), nz=3)
  b = diffusion.sample(jax.random.key(0), s, fn, (4, 2), nz=3)
  c = diffusion.sample(jax.random.key(1), s, fn, (4, 2), nz=3)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
