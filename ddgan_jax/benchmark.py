r"""Times the compiled networks, one training iteration and sampling, and prints a markdown table.

    python -m ddgan_jax.benchmark --config=configs/cifar10.py --batch_size=8 --repeats=3

Timings are medians over ``--repeats`` calls after one warm-up call (which includes compilation,
reported separately). Everything runs on the default JAX backend with random weights and data;
the work per call does not depend on the weights.
"""

import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import sampling
from ddgan_jax import steps
from ddgan_jax import train
from ddgan_jax import train_state as train_state_lib

config_flags.DEFINE_config_file('config', None, 'Configuration to benchmark.', lock_config=True)
flags.DEFINE_integer('batch_size', 8, 'Global batch size of every timed call.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per row (after one warm-up call).')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def _time(fn, *args, repeats: int) -> tuple[float, float]:
  """(first call incl. compilation, median of later calls) in seconds."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def run(config, batch: int, repeats: int) -> list[tuple[str, float, float, str]]:
  """Times the rows of the table; returns (name, first-call s, median s, derived figure)."""
  config.training.batch_size = batch
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  schedule = diffusion.schedule_from_config(config)
  mesh = sampling.make_mesh()
  keys = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  shape = train_state_lib.data_shape(config, batch)
  x = jax.random.normal(keys[0], shape)
  t = jnp.zeros((batch,), jnp.int32)
  z = jax.random.normal(keys[1], (batch, config.model.nz))
  state = jax.jit(lambda r: train_state_lib.create_train_state(
      r, config, generator, discriminator, batch))(keys[2])
  g_vars = state.generator_variables()
  rows = []

  g_fwd = jax.jit(generator.apply)
  first, med = _time(g_fwd, g_vars, x, t, z, repeats=repeats)
  rows.append(('generator forward', first, med, f'{1e3 * med / batch:.2f} ms/image'))
  d_fwd = jax.jit(discriminator.apply)
  first, med = _time(d_fwd, {'params': state.d_params}, x, t, x, repeats=repeats)
  rows.append(('discriminator forward', first, med, f'{1e3 * med / batch:.2f} ms/image'))

  step = train.compile_train_step(
      steps.make_train_step(config, generator, discriminator, schedule), mesh)
  batch_arrays = {'image': jnp.clip(x, -1, 1), 'label': t}
  holder = {'state': state}

  def one_iteration(b):
    holder['state'], metrics = step(holder['state'], b)
    return metrics

  # The first call (step 0) applies R1; the timed ones mostly do not, as in training.
  first, med = _time(one_iteration, batch_arrays, repeats=repeats)
  rows.append(('training iteration (D+G)', first, med, f'{batch / med:.2f} images/s'))

  generate = sampling.make_generate_fn(config, generator, schedule, mesh)
  first, med = _time(lambda: generate(holder['state'].generator_variables(ema=True),
                                      keys[0], config.sampling.batch_size), repeats=repeats)
  per_100 = med / config.sampling.batch_size * 100
  rows.append((f'sampling, T={config.diffusion.num_timesteps}, batch '
               f'{config.sampling.batch_size}', first, med, f'{per_100:.2f} s/100 images'))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.batch_size < 1 or FLAGS.repeats < 1:
    raise app.UsageError('--batch_size and --repeats must be positive.')
  rows = run(FLAGS.config, FLAGS.batch_size, FLAGS.repeats)
  device = jax.devices()[0]
  print(f'\nBackend {jax.default_backend()}, {jax.device_count()} x {device.device_kind}, '
        f'jax {jax.__version__}, batch {FLAGS.batch_size}, dtype {FLAGS.config.training.dtype}\n')
  print('| what | first call (s, incl. compile) | median (s) | derived |')
  print('|---|---|---|---|')
  for name, first, med, derived in rows:
    print(f'| {name} | {first:.2f} | {med:.3f} | {derived} |')


if __name__ == '__main__':
  app.run(main)
