"""The DDGAN diffusion process: noise schedule, forward pairs, Gaussian posterior and the sampler.

Everything here is a pure function of arrays. The schedule is a frozen dataclass, so it is a pytree
that can be closed over or passed through ``jax.jit``.

Index convention (the question most often asked about DDGAN):
  The paper writes a denoising step as (x_{t-1}, x_t, t) with t in 1..T. The official code, and this
  package, write the same step as (x_t, x_{t+1}, t) with t in 0..T-1. The generator G(x_{t+1}, t, z)
  and the discriminator D(x_t, t, x_{t+1}) receive the 0-based index ``t`` of the *target* level, as
  an integer that goes straight into the sinusoidal embedding. Level 0 is data, level T is (nearly)
  pure noise. Keeping this convention lets the official weights load unchanged. Concretely:

    x_t     = a_s_cum[t] * x0 + sigmas_cum[t] * eps          (level t from data)
    x_{t+1} = a_s[t+1] * x_t + sigmas[t+1] * eps'            (one more step)
    x_t'    ~ q(x_t | x_{t+1}, x0) = N(coef1[t] x0 + coef2[t] x_{t+1}, variance[t])

  and sampling starts at x_T ~ N(0, I), then for i = T-1 ... 0 predicts x0 = G(x_{i+1}, i, z) and
  draws x_i from the posterior; the last draw (i = 0) returns the x0 prediction itself.
"""

from collections.abc import Callable
import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

_EPS_SMALL = 1e-3
_FIRST_BETA = 1e-8


@flax.struct.dataclass
class Schedule:
  """Discretised noise schedule; all arrays float32.

  Attributes:
    betas: (T+1,) per-step noise variance; betas[0] = 1e-8 (level 0 is data).
    a_s: (T+1,) sqrt(1 - betas).
    sigmas: (T+1,) sqrt(betas).
    a_s_cum: (T+1,) cumulative product of a_s: the signal scale of level k.
    sigmas_cum: (T+1,) sqrt(1 - a_s_cum**2): the noise scale of level k.
    posterior_mean_coef1: (T,) multiplies x0 in the posterior mean of step t.
    posterior_mean_coef2: (T,) multiplies x_{t+1} in the posterior mean of step t.
    posterior_variance: (T,) variance of q(x_t | x_{t+1}, x0).
    posterior_log_variance_clipped: (T,) log of the variance, clipped below at 1e-20.
  """

  betas: jax.Array
  a_s: jax.Array
  sigmas: jax.Array
  a_s_cum: jax.Array
  sigmas_cum: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array

  @property
  def num_timesteps(self) -> int:
    return self.posterior_variance.shape[0]


def _alpha_bar(t: np.ndarray, beta_min: float, beta_max: float, kind: str) -> np.ndarray:
  """Continuous signal power alpha_bar(t) = exp(-int_0^t beta(s) ds) of a VP SDE."""
  if kind == 'vp':
    # Linear beta(s) = beta_min + s (beta_max - beta_min).
    return np.exp(-0.5 * t**2 * (beta_max - beta_min) - t * beta_min)
  if kind == 'geometric':
    # Geometric beta(s) = beta_min r**s, r = beta_max / beta_min. The official code instead uses
    # beta_min r**t as the *variance*, which exceeds 1 for the default limits and gives negative
    # betas; integrating the geometric rate keeps every beta in (0, 1).
    ratio = beta_max / beta_min
    return np.exp(-beta_min * (ratio**t - 1.0) / np.log(ratio))
  raise ValueError(f"Unknown noise schedule {kind!r}: use 'vp' or 'geometric'.")


def get_schedule(
    num_timesteps: int, beta_min: float = 0.1, beta_max: float = 20.0, kind: str = 'vp'
) -> Schedule:
  """Builds the T-step discretisation used by DDGAN.

  Levels k = 0..T sit at t_k = k/T (1 - 1e-3) + 1e-3; beta_k = 1 - alpha_bar(t_k)/alpha_bar(t_{k-1}).
  Matches the official ``get_sigma_schedule``/``Posterior_Coefficients`` for kind='vp'.

  Args:
    num_timesteps: T, the number of denoising steps (>= 1).
    beta_min: beta(0) of the continuous schedule.
    beta_max: beta(1) of the continuous schedule.
    kind: 'vp' (linear beta(t), the paper's) or 'geometric'.

  Returns:
    The schedule, with float32 arrays of length T+1 (forward) and T (posterior).
  """
  if int(num_timesteps) != num_timesteps or num_timesteps < 1:
    raise ValueError(f'num_timesteps must be a positive integer, got {num_timesteps!r}.')
  if not 0.0 < beta_min < beta_max:
    raise ValueError(f'Need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}.')
  t = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps * (1.0 - _EPS_SMALL) + _EPS_SMALL
  alpha_bars = _alpha_bar(t, beta_min, beta_max, kind)
  betas = np.concatenate([[_FIRST_BETA], 1.0 - alpha_bars[1:] / alpha_bars[:-1]]).astype(np.float32)
  a_s = np.sqrt(1.0 - betas)
  sigmas = np.sqrt(betas)
  a_s_cum = np.cumprod(a_s)
  sigmas_cum = np.sqrt(1.0 - a_s_cum**2)

  post_betas = betas[1:]
  alphas_cumprod = np.cumprod(1.0 - post_betas)
  alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]]).astype(np.float32)
  variance = post_betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
  coef1 = post_betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
  coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - post_betas) / (1.0 - alphas_cumprod)
  log_variance = np.log(np.maximum(variance, 1e-20))
  as_f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
  return Schedule(
      betas=as_f32(betas),
      a_s=as_f32(a_s),
      sigmas=as_f32(sigmas),
      a_s_cum=as_f32(a_s_cum),
      sigmas_cum=as_f32(sigmas_cum),
      posterior_mean_coef1=as_f32(coef1),
      posterior_mean_coef2=as_f32(coef2),
      posterior_variance=as_f32(variance),
      posterior_log_variance_clipped=as_f32(log_variance),
  )


def schedule_from_config(config) -> Schedule:
  """Builds the schedule described by ``config.diffusion``."""
  d = config.diffusion
  return get_schedule(d.num_timesteps, d.beta_min, d.beta_max, d.schedule)


def _per_example(coeffs: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
  """Gathers coeffs[t] and reshapes to broadcast against x: (B,) -> (B, 1, ..., 1)."""
  return coeffs[t].reshape((t.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype)


def q_sample(rng: jax.Array, schedule: Schedule, x0: jax.Array, t: jax.Array) -> jax.Array:
  """Draws x_t ~ q(x_t | x0) for per-example levels t.

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    x0: (B, ...) clean data.
    t: (B,) int levels in 0..T.

  Returns:
    (B, ...) noisy data at level t.
  """
  noise = jax.random.normal(rng, x0.shape, x0.dtype)
  return _per_example(schedule.a_s_cum, t, x0) * x0 + _per_example(schedule.sigmas_cum, t, x0) * noise


def q_sample_pairs(
    rng: jax.Array, schedule: Schedule, x0: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Draws a consecutive pair (x_t, x_{t+1}) from the forward process.

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    x0: (B, ...) clean data.
    t: (B,) int target levels in 0..T-1.

  Returns:
    x_t and x_{t+1}, each shaped like x0.
  """
  rng_t, rng_step = jax.random.split(rng)
  eps = jax.random.normal(rng_t, x0.shape, x0.dtype)
  eps_next = jax.random.normal(rng_step, x0.shape, x0.dtype)
  return q_pairs_from_noise(schedule, x0, t, eps, eps_next)


def q_pairs_from_noise(
    schedule: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array, eps_next: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The pair (x_t, x_{t+1}) of ``q_sample_pairs`` for given standard normal noise.

  Args:
    schedule: the noise schedule.
    x0: (B, ...) clean data.
    t: (B,) int target levels in 0..T-1.
    eps: (B, ...) noise of x_t given x0.
    eps_next: (B, ...) noise of x_{t+1} given x_t.

  Returns:
    x_t and x_{t+1}, each shaped like x0.
  """
  x_t = _per_example(schedule.a_s_cum, t, x0) * x0 + _per_example(schedule.sigmas_cum, t, x0) * eps
  x_tp1 = (_per_example(schedule.a_s, t + 1, x0) * x_t
           + _per_example(schedule.sigmas, t + 1, x0) * eps_next)
  return x_t, x_tp1


def sample_posterior(
    rng: jax.Array, schedule: Schedule, x0: jax.Array, x_tp1: jax.Array, t: jax.Array
) -> jax.Array:
  """Draws x_t ~ q(x_t | x_{t+1}, x0); at t = 0 this is x0 itself.

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    x0: (B, ...) predicted or true clean data.
    x_tp1: (B, ...) the noisier sample x_{t+1}.
    t: (B,) int target levels in 0..T-1.

  Returns:
    (B, ...) the sample x_t.
  """
  noise = jax.random.normal(rng, x0.shape, x0.dtype)
  return posterior_from_noise(schedule, x0, x_tp1, t, noise)


def posterior_from_noise(
    schedule: Schedule, x0: jax.Array, x_tp1: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
  """The draw of ``sample_posterior`` for given standard normal noise.

  Args:
    schedule: the noise schedule.
    x0: (B, ...) predicted or true clean data.
    x_tp1: (B, ...) the noisier sample x_{t+1}.
    t: (B,) int target levels in 0..T-1.
    noise: (B, ...) the posterior noise (unused where t = 0).

  Returns:
    (B, ...) the sample x_t.
  """
  mean = (
      _per_example(schedule.posterior_mean_coef1, t, x0) * x0
      + _per_example(schedule.posterior_mean_coef2, t, x0) * x_tp1
  )
  std = jnp.exp(0.5 * _per_example(schedule.posterior_log_variance_clipped, t, x0))
  # Level 0 is data: return x0 itself, not coef1[0] x0 + coef2[0] x_{t+1}, which float32 rounds
  # to within 1e-7 of it (the official code returns that approximation).
  is_data = (t == 0).reshape((t.shape[0],) + (1,) * (x0.ndim - 1))
  return jnp.where(is_data, x0, mean + std * noise)


GeneratorFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def reverse_chain(
    rng: jax.Array, schedule: Schedule, generator_fn: GeneratorFn, x_start: jax.Array,
    start: int | jax.Array, nz: int,
) -> jax.Array:
  """Runs the reverse chain from x_start at level ``start`` down to level 0, in one fori_loop.

  The step to level i draws its latent z and posterior noise from ``fold_in(rng, i)``.

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    generator_fn: (x_{t+1} (B, ...), t (B,) int32, z (B, nz)) -> x0 prediction (B, ...).
    x_start: (B, ...) float32 sample at level ``start``.
    start: the start level in 1..T (an int, or a traced () int).
    nz: latent size.

  Returns:
    (B, ...) samples x_0 (float32).
  """
  batch = x_start.shape[0]

  def body(k, x):
    i = start - 1 - k
    rng_z, rng_post = jax.random.split(jax.random.fold_in(rng, i))
    t = jnp.full((batch,), i, jnp.int32)
    z = jax.random.normal(rng_z, (batch, nz), jnp.float32)
    x0 = generator_fn(x, t, z).astype(jnp.float32)
    return sample_posterior(rng_post, schedule, x0, x, t)

  return jax.lax.fori_loop(0, start, body, x_start)


def sample(
    rng: jax.Array, schedule: Schedule, generator_fn: GeneratorFn, shape: tuple[int, ...], nz: int
) -> jax.Array:
  """Runs the whole T-step reverse chain from pure noise (``reverse_chain`` from level T).

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    generator_fn: (x_{t+1} (B, ...), t (B,) int32, z (B, nz)) -> x0 prediction (B, ...).
    shape: (B, ...) shape of the samples.
    nz: latent size.

  Returns:
    (B, ...) samples x_0 (float32).
  """
  rng, rng_init = jax.random.split(rng)
  x_init = jax.random.normal(rng_init, shape, jnp.float32)
  return reverse_chain(rng, schedule, generator_fn, x_init, schedule.num_timesteps, nz)


def schedule_as_dict(schedule: Schedule) -> dict[str, np.ndarray]:
  """The schedule's arrays as numpy, keyed by field name (for logging and tests)."""
  return {f.name: np.asarray(getattr(schedule, f.name)) for f in dataclasses.fields(schedule)}
