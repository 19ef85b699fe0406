r"""Times the compiled networks, one training iteration and sampling; prints a table or JSON.

    python -m ddgan_jax.benchmark --config=configs/cifar10.py --batch_size=8 --repeats=3
    python -m ddgan_jax.benchmark --config=configs/cifar10.py --batch_size=256 \
        --config.training.dtype=bfloat16 --json

Timings are medians over ``--repeats`` calls after one warm-up call. The training iteration is
three programs (``steps.TrainStep``): the iteration, and the R1 terms it takes, computed at the
iterations with R1 (``steps.applies_r1``) and zeros at the others. Each is compiled ahead of
time, so compilation is timed on its own (``compile_s``, all three), and XLA's cost analysis
gives their FLOPs. ``train_step_s`` and ``flops_per_iteration`` are means over one R1 period: one
iteration with R1 and ``training.lazy_reg`` - 1 without. Everything runs on the default JAX
backend with random weights and data; the work per call does not depend on the weights.
``--json`` prints one line with ``train_step_s``, ``train_img_s``, ``compile_s``,
``sample_s_per_100``, ``sample_s_batch1``, ``peak_memory_bytes`` (and where it was read: the
device's allocator, or the host's peak RSS on CPU), ``flops_per_iteration`` and ``peak_fraction``
(of the device's dense peak for the dtype; null where the peak is not in ``PEAK_FLOPS``).

``--profile_dir=DIR`` also traces one R1 period of training iterations with ``jax.profiler`` into
DIR (TensorBoard's profile plugin opens it) and prints where their time goes, grouped by XLA
operation (``profile_table``); with ``--json`` the groups are the line's ``profile`` field.
"""

import json
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from ddgan_jax import compilation
from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import profile_table
from ddgan_jax import sampling
from ddgan_jax import steps
from ddgan_jax import train
from ddgan_jax import train_state as train_state_lib

config_flags.DEFINE_config_file('config', None, 'Configuration to benchmark.', lock_config=True)
flags.DEFINE_integer('batch_size', 8, 'Global batch size of the training step.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per row (after one warm-up call).')
flags.DEFINE_bool('json', False, 'Print one JSON line instead of the markdown table.')
flags.DEFINE_string('compilation_cache_dir', '',
                    "Persistent compilation cache; '' (the default here) compiles from scratch, "
                    'so that compile_s measures compilation.')
flags.DEFINE_string('profile_dir', '',
                    "Trace one R1 period of training iterations into this directory and print a "
                    "table of where their time goes; '' (the default) traces nothing.")
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

# Dense peak FLOP/s per chip by (device-kind substring, dtype): bfloat16 tensor cores / MXU, and
# TF32 for float32 on NVIDIA GPUs (XLA's default float32 precision there).
PEAK_FLOPS = {
    ('H100', 'bfloat16'): 989e12, ('H100', 'float32'): 495e12,
    ('H200', 'bfloat16'): 989e12, ('H200', 'float32'): 495e12,
    ('A100', 'bfloat16'): 312e12, ('A100', 'float32'): 156e12,
    ('TPU v4', 'bfloat16'): 275e12, ('TPU v5 lite', 'bfloat16'): 197e12,
    ('TPU v5e', 'bfloat16'): 197e12, ('TPU v5p', 'bfloat16'): 459e12,
    ('TPU v6', 'bfloat16'): 918e12,
}


def _time(fn, *args, repeats: int) -> tuple[float, float]:
  """(first call, median of ``repeats`` later calls) in seconds."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def _flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The dense peak FLOP/s of one device of ``device_kind`` in ``dtype``, if known."""
  for (kind, kind_dtype), value in PEAK_FLOPS.items():
    if kind in device_kind and kind_dtype == dtype:
      return value
  return None


def _peak_memory() -> tuple[int, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device allocator, device 0'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'host peak RSS'


def _profile(one_iteration, lazy_reg: int, profile_dir: str, untraced_s: float) -> dict:
  """Traces one R1 period (the first iteration with R1) and groups its operations.

  ``untraced_s`` is the iteration's mean time without the tracer, which slows the operations.
  """
  start = time.perf_counter()
  with jax.profiler.trace(profile_dir):
    for i in range(lazy_reg):
      jax.block_until_ready(one_iteration(i == 0 or lazy_reg == 1))
  traced_s = (time.perf_counter() - start) / lazy_reg
  rows = profile_table.op_table(profile_dir, lazy_reg)
  return {'ops_per_iteration': sum(r.calls for r in rows), 'traced_s_per_iteration': traced_s,
          'groups': [[r.name, r.calls, r.ms] for r in rows],
          'table': profile_table.format_table(rows, untraced_s, traced_s)}


def run(config, batch: int, repeats: int, profile_dir: str = '') -> dict:
  """Measures one config; returns the JSON figures plus 'rows' (name, first s, median s, note),
  and 'profile' (``_profile``'s dict) when ``profile_dir`` is set."""
  config.training.batch_size = batch
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  schedule = diffusion.schedule_from_config(config)
  mesh = sampling.make_mesh()
  keys = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  x = jax.random.normal(keys[0], train_state_lib.data_shape(config, batch))
  t = jnp.zeros((batch,), jnp.int32)
  z = jax.random.normal(keys[1], (batch, config.model.nz))
  state = jax.jit(train_state_lib.state_initializer(config, generator, discriminator, batch),
                  out_shardings=NamedSharding(mesh, P()))(keys[2])
  rows = []

  first, med = _time(jax.jit(generator.apply), state.generator_variables(), x, t, z,
                     repeats=repeats)
  rows.append(('generator forward', first, med, f'{1e3 * med / batch:.2f} ms/image'))
  first, med = _time(jax.jit(discriminator.apply), {'params': state.d_params}, x, t, x,
                     repeats=repeats)
  rows.append(('discriminator forward', first, med, f'{1e3 * med / batch:.2f} ms/image'))

  batch_arrays = train.global_batch({'image': jnp.clip(x, -1, 1)}, mesh, batch)
  lowerings = train.program_lowerings(
      steps.make_train_step(config, generator, discriminator, schedule), mesh, state, batch_arrays)
  lazy_reg = config.training.lazy_reg
  compiled, compile_s, program_flops = {}, 0.0, {}
  for name, lower in lowerings.items():
    start = time.perf_counter()
    compiled[name] = lower().compile()
    compile_s += time.perf_counter() - start
    program_flops[name] = _flops(compiled[name])
  holder = {'state': state}

  def one_iteration(apply_r1: bool):
    state = holder['state']
    r1 = (compiled['r1_step'](state, batch_arrays) if apply_r1
          else compiled['zero_r1_step'](state))
    holder['state'], metrics = compiled['iteration_step'](state, batch_arrays, r1)
    return metrics

  variants = (True,) if lazy_reg == 1 else (False, True)
  iteration_s, flops = {}, {}
  for apply_r1 in variants:
    # Filling zeros is no arithmetic (XLA's cost analysis may give no figure for it).
    parts = ('r1_step', 'iteration_step') if apply_r1 else ('iteration_step',)
    flops[apply_r1] = (None if any(program_flops[p] is None for p in parts)
                       else sum(program_flops[p] for p in parts))
    first, iteration_s[apply_r1] = _time(one_iteration, apply_r1, repeats=repeats)
    rows.append((f'training iteration (D+G), {"with" if apply_r1 else "without"} R1', first,
                 iteration_s[apply_r1], f'{batch / iteration_s[apply_r1]:.2f} images/s'))
  # Training runs lazy_reg - 1 iterations without R1 for each one with it.
  period_mean = lambda v: (v[True] + (lazy_reg - 1) * v.get(False, 0.0)) / lazy_reg
  train_s = period_mean(iteration_s)
  profile = _profile(one_iteration, lazy_reg, profile_dir, train_s) if profile_dir else None
  rows.append((f'training iteration, mean with R1 every {lazy_reg}', compile_s,
               train_s, f'{batch / train_s:.2f} images/s'))

  variables = holder['state'].generator_variables(ema=True)
  generate = sampling.make_generate_fn(config, generator, schedule, mesh)
  num = config.sampling.batch_size
  first, med = _time(lambda: generate(variables, keys[0], num), repeats=repeats)
  per_100 = med / num * 100
  rows.append((f'sampling, T={config.diffusion.num_timesteps}, batch {num}', first, med,
               f'{per_100:.3f} s/100 images'))
  one_config = config.copy_and_resolve_references()
  one_config.sampling.batch_size = 1
  generate_one = sampling.make_generate_fn(one_config, generator, schedule, mesh)
  first, batch1_s = _time(lambda: generate_one(variables, keys[0], 1), repeats=repeats)
  rows.append((f'sampling, T={config.diffusion.num_timesteps}, batch 1', first, batch1_s,
               f'{1e3 * batch1_s:.1f} ms/image'))

  flops = period_mean(flops) if None not in flops.values() else None
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind, config.training.dtype)
  memory, memory_source = _peak_memory()
  return {
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'jax_version': jax.__version__,
      'dtype': config.training.dtype,
      'batch_size': batch,
      'train_step_s': train_s,
      'train_img_s': batch / train_s,
      'compile_s': compile_s,
      'sample_s_per_100': per_100,
      'sample_s_batch1': batch1_s,
      'peak_memory_bytes': memory,
      'peak_memory_source': memory_source,
      'flops_per_iteration': flops,
      'peak_fraction': (flops / train_s / (peak * jax.device_count())
                        if flops and peak else None),
      'rows': rows,
      **({'profile': profile} if profile else {}),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.batch_size < 1 or FLAGS.repeats < 1:
    raise app.UsageError('--batch_size and --repeats must be positive.')
  compilation.enable_persistent_cache(FLAGS.compilation_cache_dir)
  result = run(FLAGS.config, FLAGS.batch_size, FLAGS.repeats, FLAGS.profile_dir)
  rows = result.pop('rows')
  table = result['profile'].pop('table') if 'profile' in result else None
  if FLAGS.json:
    print(json.dumps(result))
    return
  print(f"\nBackend {result['backend']}, {result['device_count']} x {result['device_kind']}, "
        f"jax {result['jax_version']}, batch {FLAGS.batch_size}, dtype {result['dtype']}\n")
  print('| what | first call (s, incl. compile; training: the compile) | median (s) | derived |')
  print('|---|---|---|---|')
  for name, first, med, derived in rows:
    print(f'| {name} | {first:.2f} | {med:.3f} | {derived} |')
  flops = result['flops_per_iteration']
  print(f"\nTraining step: compiled in {result['compile_s']:.1f} s; "
        f"{flops / 1e9 if flops else float('nan'):.1f} GFLOP per iteration; peak memory "
        f"{result['peak_memory_bytes'] / 2**20:.0f} MiB ({result['peak_memory_source']}).")
  if table:
    print(f'\nWhere one R1 period of training iterations goes (trace in {FLAGS.profile_dir}):\n')
    print(table)


if __name__ == '__main__':
  app.run(main)
