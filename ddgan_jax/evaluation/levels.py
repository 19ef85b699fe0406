"""Where along the chain a run loses quality (``config.eval.per_level``).

Two views of the T levels, reported under 'levels' of ``eval/metrics_step<N>.json``:
  * discriminator: for each level t = 0..T-1, on real training images x0 (config.eval.num_samples,
    or all of them if fewer), pairs (x_t, x_{t+1}) ~ q are real and pairs (x_t', x_{t+1}) with
    x_t' ~ q(x_t | x_{t+1}, G(x_{t+1}, t, z)) fake, G being the raw generator (the one D trains
    against). It reports D's mean logit on each ('d_real', 'd_fake'), their 'auc' (the fraction
    of (real, fake) pairs of logits D orders correctly, ties counting half: 1 separates them
    perfectly, 0.5 is chance) and 'x0_error', the mean |G(x_{t+1}, t, z) - x0| in the data's
    range. An AUC near 0.5 means D gives G no signal at that level.
  * chains: for each start level k = 1..T-1, real held-out images (config.eval.num_samples of
    them, taken in turn) are noised to x_k ~ q(x_k | x0) and the EMA chain runs from there to
    level 0. The family scores these samples as it scores its samples from noise (k = T, its
    'samples'), so a drop between k and k + 1 shows where quality or class balance is lost.

A family supports this with three functions besides those of ``ddgan_jax.evaluation``:
  level_images(config) -> (train, heldout): uint8 real training and held-out images (N, ...).
  score_levels(config, chains) -> {k: scores}: the scores of each start level's uint8 samples
    (chains maps k to them).
  level_summary(scores) -> str: a few words on one start level's scores, for the log.

The batches (config.eval.batch_size rows, the last one filled up with the first images) are
jitted at their global shape and split over the mesh's 'data' axis, so the numbers depend on the
checkpoint, seed, images and batch size only, not on the device count. Batch b of level t draws
from fold_in(fold_in(fold_in(eval stream, part id), t), b), the part ids being hashes far from
the batch indices that ``common.draw_samples`` folds into the same stream.
"""

from collections.abc import Callable
from types import ModuleType
from typing import Any
import zlib

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import scipy.stats

from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import sampling
from ddgan_jax import train_state as train_state_lib
from ddgan_jax.data import indexed

PARTS = ('discriminator', 'chains')


def auc(real: np.ndarray, fake: np.ndarray) -> float:
  """The fraction of pairs (r, f) with r > f, ties counting half (the Mann-Whitney U / (N M)).

  Args:
    real: (N,) scores of real examples, N >= 1.
    fake: (M,) scores of fake examples, M >= 1.

  Returns:
    A float in [0, 1]: 1 when every real score is above every fake one, 0 when below, 0.5 when
    all are equal.
  """
  real, fake = np.asarray(real, np.float64).ravel(), np.asarray(fake, np.float64).ravel()
  if not len(real) or not len(fake):
    raise ValueError(f'The AUC needs real and fake scores, got {len(real)} and {len(fake)}.')
  ranks = scipy.stats.rankdata(np.concatenate([real, fake]))  # Ties get their average rank.
  wins = ranks[:len(real)].sum() - len(real) * (len(real) + 1) / 2.0
  return float(wins / (len(real) * len(fake)))


def batch_key(stream: jax.Array, part: str, level: int, batch: int) -> jax.Array:
  """The key of batch ``batch`` of level ``level`` of ``part`` ('discriminator' or 'chains').

  Args:
    stream: the 'eval' stream, ``rng_lib.seed_stream(config.seed, 'eval')``.
    part: one of ``PARTS``.
    level: t for the discriminator, the start level k for the chains.
    batch: the batch index.

  Returns:
    (2,) uint32 key: fold_in(fold_in(fold_in(stream, CRC-32 of the part), level), batch).
  """
  if part not in PARTS:
    raise ValueError(f'Unknown part {part!r}; expected one of {PARTS}.')
  part_key = jax.random.fold_in(stream, zlib.crc32(f'ddgan_jax/eval/levels/{part}'.encode()))
  return jax.random.fold_in(jax.random.fold_in(part_key, level), batch)


def chain_from_level(
    rng: jax.Array, schedule: diffusion.Schedule, generator_fn: diffusion.GeneratorFn,
    x0: jax.Array, start: jax.Array, nz: int,
) -> jax.Array:
  """Noises x0 to level ``start`` and runs the reverse chain from there to level 0.

  The chain is ``diffusion.sample``'s (``diffusion.reverse_chain``); only the first point differs:
  x_start ~ q(x_start | x0) instead of N(0, I).

  Args:
    rng: PRNG key.
    schedule: the noise schedule.
    generator_fn: (x_{t+1} (B, ...), t (B,) int32, z (B, nz)) -> x0 prediction (B, ...).
    x0: (B, ...) float32 real data in the data's range.
    start: () int, the start level in 1..T (may be traced).
    nz: latent size.

  Returns:
    (B, ...) float32 samples x_0.
  """
  rng, rng_start = jax.random.split(rng)
  x_start = diffusion.q_sample(rng_start, schedule, x0, jnp.full((x0.shape[0],), start, jnp.int32))
  return diffusion.reverse_chain(rng, schedule, generator_fn, x_start, start, nz)


def _to_data_range(config: ml_collections.ConfigDict, images: np.ndarray) -> np.ndarray:
  """uint8 images to float32 in the range the run trained on ([-1, 1], or [0, 1])."""
  x = indexed.to_model_range(images)
  return x if config.model.centered else (x + 1.0) / 2.0


def make_separation_fn(config: ml_collections.ConfigDict, mesh: Mesh) -> Callable[..., dict]:
  """Returns the jitted separation(g_variables, d_params, key, x0, t) of one batch.

  x0 is (B, ...) float32 real data, t a () int32 level; the result holds (B,) float32 arrays
  'real' and 'fake' (D's logits) and 'x0_error' (each image's mean |x0 prediction - x0|), split
  over 'data' when B divides evenly.
  """
  generator, discriminator = models.build_generator(config), models.build_discriminator(config)
  schedule = diffusion.schedule_from_config(config)
  split = sampling.batch_sharding(mesh, config.eval.batch_size)

  def separation(g_variables, d_params, key, x0, level):
    x0 = jax.lax.with_sharding_constraint(x0, split)
    b = x0.shape[0]
    t = jnp.full((b,), level, jnp.int32)
    rng_pair, rng_z, rng_post = jax.random.split(key, 3)
    x_t, x_tp1 = diffusion.q_sample_pairs(rng_pair, schedule, x0, t)
    z = jax.random.normal(rng_z, (b, config.model.nz), jnp.float32)
    x0_pred = generator.apply(g_variables, x_tp1, t, z, train=False).astype(jnp.float32)
    x_fake = diffusion.sample_posterior(rng_post, schedule, x0_pred, x_tp1, t)
    # Real and fake pairs go through D as batches of their own, as in training: the minibatch
    # stddev of the image discriminators mixes a batch's rows.
    logits = lambda x: discriminator.apply({'params': d_params}, x, t, x_tp1)[:, 0]
    return {
        'real': logits(x_t).astype(jnp.float32),
        'fake': logits(x_fake).astype(jnp.float32),
        'x0_error': jnp.mean(jnp.abs(x0_pred - x0).reshape(b, -1), axis=1),
    }

  replicated = NamedSharding(mesh, P())
  return jax.jit(separation, in_shardings=(replicated,) * 5, out_shardings=split)


def make_chain_fn(config: ml_collections.ConfigDict, mesh: Mesh) -> Callable[..., jax.Array]:
  """Returns the jitted chain(variables, key, x0, k): ``chain_from_level`` of one batch.

  x0 is (B, ...) float32 real data and k a () int32 start level; the (B, ...) float32 samples
  are split over 'data' when B divides evenly.
  """
  generator = models.build_generator(config)
  schedule = diffusion.schedule_from_config(config)
  split = sampling.batch_sharding(mesh, config.eval.batch_size)

  def chain(variables, key, x0, start):
    g = lambda x, t, z: generator.apply(variables, x, t, z, train=False)
    x0 = jax.lax.with_sharding_constraint(x0, split)
    return chain_from_level(key, schedule, g, x0, start, config.model.nz)

  replicated = NamedSharding(mesh, P())
  return jax.jit(chain, in_shardings=(replicated,) * 4, out_shardings=split)


def _batched(
    config: ml_collections.ConfigDict, part: str, level: int, x0: np.ndarray,
    run: Callable[[jax.Array, np.ndarray], Any], progress: sampling.Progress, done: int,
) -> Any:
  """``run(key, batch)`` over x0 (N, ...) in batches of config.eval.batch_size, rows gathered.

  The last batch is filled up with the first rows of x0 and its extra outputs are dropped.

  Args:
    config: the run's config (seed, eval.batch_size).
    part: 'discriminator' or 'chains', for the keys (``batch_key``).
    level: the level t or start level k, for the keys.
    x0: (N, ...) float32 inputs.
    run: maps a key and a batch (B, ...) to a global jax.Array, or a dict of them, of B rows.
    progress: the progress log.
    done: the items ``progress`` counted before this call.

  Returns:
    ``run``'s outputs for the N rows, concatenated (numpy arrays, or dicts of them).
  """
  batch, num = config.eval.batch_size, len(x0)
  num_batches = -(-num // batch)
  padded = np.resize(x0, (num_batches * batch,) + x0.shape[1:])
  stream = rng_lib.seed_stream(config.seed, 'eval')
  outs = []
  for b in range(num_batches):
    out = run(batch_key(stream, part, level, b), padded[b * batch:(b + 1) * batch])
    count = min(batch, num - b * batch)
    outs.append(jax.tree.map(lambda a, count=count: sampling.gathered_rows(a, count), out))
    progress.update(done + b * batch + count)
  return jax.tree.map(lambda *rows: np.concatenate(rows), *outs)


def discriminator_levels(
    config: ml_collections.ConfigDict, state: train_state_lib.TrainState, images: np.ndarray,
    mesh: Mesh,
) -> dict:
  """D's separation of real and fake pairs and the raw G's x0 error at every level.

  Args:
    config: the run's config.
    state: the restored training state, replicated over ``mesh``.
    images: uint8 (N, ...) real training images.
    mesh: a 1-D mesh with axis 'data'.

  Returns:
    {'level_<t>': {'d_real', 'd_fake', 'auc', 'x0_error'}} for t = 0..T-1 (see the module
    docstring).
  """
  separation = make_separation_fn(config, mesh)
  variables, d_params = state.generator_variables(ema=False), state.d_params
  x0 = _to_data_range(config, images)
  num_levels = config.diffusion.num_timesteps
  progress = sampling.Progress(num_levels * len(x0), 'Per-level discriminator')
  out = {}
  for t in range(num_levels):
    run = lambda key, rows, t=t: separation(variables, d_params, key, rows, np.int32(t))
    o = _batched(config, 'discriminator', t, x0, run, progress, t * len(x0))
    out[f'level_{t}'] = {
        'd_real': float(np.mean(o['real'])),
        'd_fake': float(np.mean(o['fake'])),
        'auc': auc(o['real'], o['fake']),
        'x0_error': float(np.mean(o['x0_error'])),
    }
  return out


def chains_from_levels(
    config: ml_collections.ConfigDict, state: train_state_lib.TrainState, images: np.ndarray,
    mesh: Mesh,
) -> dict[int, np.ndarray]:
  """EMA chains from real images noised to each level k = 1..T-1.

  Args:
    config: the run's config.
    state: the restored training state, replicated over ``mesh``.
    images: uint8 (N, ...) real held-out images; chain i starts from images[i].
    mesh: a 1-D mesh with axis 'data'.

  Returns:
    {k: uint8 (N, ...) samples, quantised as the saved PNGs are}.
  """
  chain = make_chain_fn(config, mesh)
  variables = state.generator_variables(ema=True)
  x0 = _to_data_range(config, images)
  starts = range(1, config.diffusion.num_timesteps)
  progress = sampling.Progress(len(starts) * len(x0), 'Chains from real data')
  out = {}
  for i, k in enumerate(starts):
    run = lambda key, rows, k=k: chain(variables, key, rows, np.int32(k))
    samples = _batched(config, 'chains', k, x0, run, progress, i * len(x0))
    out[k] = sampling.to_uint8(samples, config.model.centered)
  return out


def evaluate_levels(
    config: ml_collections.ConfigDict, state: train_state_lib.TrainState, family: ModuleType,
    mesh: Mesh,
) -> dict:
  """The 'levels' block of ``evaluate``'s metrics.

  Args:
    config: the run's config; reads eval.num_samples, eval.batch_size, seed and the model's.
    state: the restored training state, replicated over ``mesh``.
    family: a metric family with ``level_images``, ``score_levels`` and ``level_summary``.
    mesh: a 1-D mesh with axis 'data'.

  Returns:
    {'discriminator': ``discriminator_levels`` of the first config.eval.num_samples training
     images, 'chains': the family's ``score_levels`` of config.eval.num_samples chains per start
     level, 'num_real': the training images used, 'num_chains'}.
  """
  train, heldout = family.level_images(config)
  num = config.eval.num_samples
  train = train[:num]
  starts = np.resize(heldout, (num,) + heldout.shape[1:])
  return {
      'discriminator': discriminator_levels(config, state, train, mesh),
      'chains': {f'from_level_{k}': scores for k, scores in family.score_levels(
          config, chains_from_levels(config, state, starts, mesh)).items()},
      'num_real': len(train),
      'num_chains': num,
  }


def summary(levels: dict, family: ModuleType) -> str:
  """A compact line on ``evaluate_levels``' block, for the log."""
  d = levels['discriminator']
  column = lambda key, fmt: ' '.join(format(d[f'level_{t}'][key], fmt) for t in range(len(d)))
  chains = '; '.join(f'x_{k} {family.level_summary(levels["chains"][f"from_level_{k}"])}'
                     for k in range(1, len(d)))
  return (f'D AUC {column("auc", ".2f")}, |x0 pred - x0| {column("x0_error", ".3f")} '
          f'(t = 0..{len(d) - 1}, n={levels["num_real"]}); EMA chains from real {chains} '
          f'(n={levels["num_chains"]})')
