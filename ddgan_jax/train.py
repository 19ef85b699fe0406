"""The DDGAN training loop: sharding, metrics, sample grids, evaluation, checkpoints, preemption.

The iteration's programs (``steps.TrainStep``) are compiled over a 1-D device mesh (axis 'data')
spanning every process: the state is replicated, the global batch is split along its first axis
and the state is donated. They compile in two threads while the state is built or restored.
Since random numbers are drawn at the global batch shape, a run gives the same numbers on 1
device, 8 devices or several hosts, and a resumed run continues exactly as a straight one (state, RNG and data order all follow the step).
"""

from collections.abc import Callable
import concurrent.futures
import signal
import time

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
from etils import epath
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from ddgan_jax import checkpoints
from ddgan_jax import compilation
from ddgan_jax import diffusion
from ddgan_jax import input_pipeline
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import run_config
from ddgan_jax import sampling
from ddgan_jax import steps
from ddgan_jax import train_state as train_state_lib
from ddgan_jax.evaluation import during_training

_LOSSES = ('d_loss', 'g_loss')


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the run stopped without saving the bad state."""


def program_lowerings(
    step: steps.TrainStep, mesh: Mesh, state: train_state_lib.TrainState, batch: steps.Batch
) -> dict[str, Callable[[], jax.stages.Lowered]]:
  """TrainStep field -> a function that traces and lowers that program (``compile_train_step``)."""
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P('data'))
  iteration = jax.jit(step.iteration_step, in_shardings=(replicated, data, replicated),
                      out_shardings=(replicated, replicated), donate_argnums=0)
  r1 = jax.jit(step.r1_step, in_shardings=(replicated, data), out_shardings=replicated)
  zero_r1 = jax.jit(step.zero_r1_step, out_shardings=replicated)
  return {
      'iteration_step': lambda: iteration.lower(
          state, batch, jax.eval_shape(step.zero_r1_step, state)),
      'r1_step': lambda: r1.lower(state, batch),
      'zero_r1_step': lambda: zero_r1.lower(state),
  }


def compile_train_step(
    step: steps.TrainStep, mesh: Mesh, state: train_state_lib.TrainState, batch: steps.Batch
) -> steps.TrainStep:
  """Compiles the programs of ``step`` ahead of time over ``mesh``: state replicated (and donated
  to the iteration), batch split over 'data', R1 terms replicated.

  Args:
    step: the uncompiled iteration (``steps.make_train_step``).
    mesh: the 1-D device mesh (axis 'data').
    state: a training state, or its abstract value (``train_state.abstract_train_state``). The
      programs take states of exactly its tree structure, static optimisers included.
    batch: a global batch, or {'image': jax.ShapeDtypeStruct} of the global batch's shape and
      float32.

  Returns:
    A ``steps.TrainStep`` of compiled programs.
  """
  lowerings = program_lowerings(step, mesh, state, batch)
  return steps.TrainStep(**{name: lower().compile() for name, lower in lowerings.items()})


class _CompilingTrainStep:
  """The training programs of ``compile_train_step``, compiling in two threads.

  The iteration takes longest, so it is traced at once, before other Python work competes for
  the interpreter, and compiles in one thread while the R1 programs are traced and compiled in
  the other.
  """

  def __init__(self, step, mesh, state, batch):
    lowerings = program_lowerings(step, mesh, state, batch)
    iteration = lowerings.pop('iteration_step')()
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix='compile_train_step')
    self._futures = {'iteration_step': pool.submit(iteration.compile)}
    for name, lower in lowerings.items():
      self._futures[name] = pool.submit(lambda lower=lower: lower().compile())
    pool.shutdown(wait=False)

  def result(self) -> steps.TrainStep:
    return steps.TrainStep(**{name: f.result() for name, f in self._futures.items()})

  def close(self) -> None:
    """Drops the programs: cancels the compilations not yet started and waits for the others,
    so that none outlives a run that stops before its first step (XLA cannot stop one)."""
    for future in self._futures.values():
      future.cancel()
    concurrent.futures.wait(self._futures.values())


def _compile_in_background(config, generator, discriminator, schedule, mesh, abstract_state):
  """Lowers the training iteration and compiles the programs in threads; ``.result()`` gives the
  TrainStep."""
  batch = {'image': jax.ShapeDtypeStruct(
      train_state_lib.data_shape(config, config.training.batch_size), np.float32)}
  step = steps.make_train_step(config, generator, discriminator, schedule)
  return _CompilingTrainStep(step, mesh, abstract_state, batch)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh, per_host: int) -> dict:
  """Assembles the processes' local batches into one global float32 array split over 'data'."""
  images = local_batch['image']
  if images.shape[0] != per_host:
    raise ValueError(
        f'The input pipeline gave a batch of {images.shape[0]} examples, expected {per_host} '
        '(config.training.batch_size // process count).'
    )
  sharding = NamedSharding(mesh, P('data'))
  return {'image': jax.make_array_from_process_local_data(
      sharding, np.asarray(images, np.float32))}


def summarize(pending: list[dict[str, jax.Array]], first_step: int) -> dict[str, float]:
  """Means of per-step metrics (R1 over the steps that applied it).

  Args:
    pending: per-step metric dicts for the steps first_step, first_step + 1, ...
    first_step: the step index (0-based) of ``pending[0]``.

  Returns:
    Metric name -> float mean.

  Raises:
    NonFiniteLossError: naming the first step whose D or G loss is NaN or Inf.
  """
  stacked = {k: np.stack([np.asarray(m[k]) for m in pending]) for k in pending[0]}
  for name in _LOSSES:
    bad = np.flatnonzero(~np.isfinite(stacked[name]))
    if bad.size:
      raise NonFiniteLossError(
          f'{name} is {stacked[name][bad[0]]} at training step {first_step + bad[0]}.'
      )
  applied = stacked.pop('r1_applied')
  summary = {k: float(v.mean()) for k, v in stacked.items()}
  if applied.sum() > 0:
    summary['r1'] = float(stacked['r1'].sum() / applied.sum())
  else:
    summary.pop('r1')
  return summary


def _flat_hparams(config: ml_collections.ConfigDict) -> dict:
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(f'{prefix}{k}.', v)
      else:
        flat[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)

  walk('', config.to_dict())
  return flat


class _SigtermFlag:
  """Turns SIGTERM into a flag read at the end of each step (single-process runs only).

  Multi-process runs rely on JAX's preemption sync point instead, which needs all processes to
  agree on the step to stop at.
  """

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the end of this step.')
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _initial_state(config, generator, discriminator, num_examples, mesh, ckpt, latest, abstract):
  """The step-0 state, or the newest readable checkpoint when ``latest`` is not None, in the tree
  structure of ``abstract`` (whose static optimisers the compiled programs were built with)."""
  if latest is None:
    create = train_state_lib.state_initializer(config, generator, discriminator, num_examples)
    rng = jax.random.PRNGKey(config.seed)
    replicated = NamedSharding(mesh, P())
    state = compilation.compile_for_one_call(jax.jit(create, out_shardings=replicated), rng)(rng)
  else:
    state = ckpt.restore_latest(abstract)
  return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(state))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> train_state_lib.TrainState:
  """Trains DDGAN for ``config.training.num_steps`` global steps, resuming from ``workdir``.

  Args:
    config: the full config.
    workdir: where checkpoints, TensorBoard summaries and profiles go (local or gs://).

  Returns:
    The final state (after the last step, or at the preemption step).

  Raises:
    NonFiniteLossError: when a loss turns NaN/Inf; the checkpoints already written are kept.
  """
  train_state_lib.check_config(config)
  models.check_image_size(config)
  input_pipeline.check_global_batch(config, jax.device_count(), jax.process_count())
  workdir_path = epath.Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  mesh = sampling.make_mesh()
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  schedule = diffusion.schedule_from_config(config)
  ckpt = checkpoints.from_config(workdir, config)
  run_config.record(config, workdir, has_checkpoints=ckpt.latest_step() is not None)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)

  latest = ckpt.latest_step()
  # Processes agree on the preemption step from the step each last reported; without a report,
  # a notice that arrives before the first step would name a step this run never reaches.
  ckpt.reached_preemption(latest or 0)
  data_kwargs = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter, num_examples = input_pipeline.create_dataset(
      config, start_step=latest or 0, **data_kwargs
  )
  abstract_state = train_state_lib.abstract_train_state(
      config, generator, discriminator, num_examples, mesh)
  # The programs compile in threads while the state is built or restored.
  compiling = None
  if latest is None or latest < train_state_lib.total_steps(config, num_examples):
    compiling = _compile_in_background(config, generator, discriminator, schedule, mesh,
                                       abstract_state)
  try:
    state = _initial_state(config, generator, discriminator, num_examples, mesh, ckpt, latest,
                           abstract_state)
  except BaseException:
    if compiling:
      compiling.close()
    raise
  start_step = int(jax.device_get(state.step))
  if latest is not None and start_step != latest:
    train_iter, num_examples = input_pipeline.create_dataset(
        config, start_step=start_step, **data_kwargs
    )
  num_steps = train_state_lib.total_steps(config, num_examples)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config))
    parameter_overview.log_parameter_overview(state.g_params, msg='Generator parameters')
    parameter_overview.log_parameter_overview(state.d_params, msg='Discriminator parameters')
  else:
    logging.info('Resuming from the checkpoint at step %d in %s.', start_step, ckpt.directory)
  if start_step >= num_steps:
    logging.info('Already trained for %d >= %d steps; nothing to do.', start_step, num_steps)
    if compiling:
      compiling.close()
    ckpt.close()
    writer.flush()
    return state

  train_step = (compiling or _compile_in_background(
      config, generator, discriminator, schedule, mesh, abstract_state)).result()
  generate = sampling.make_generate_fn(config, generator, schedule, mesh)
  grid_rng = rng_lib.seed_stream(config.seed, 'grid')
  per_host = config.training.batch_size // jax.process_count()
  t = config.training
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=t.log_every)]
  if t.profile_steps > 0 and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=t.profile_steps,
                                          first_profile=start_step + t.log_every,
                                          profile_duration_ms=None))

  evaluator = during_training.Evaluator(config, workdir, mesh, writer) if t.eval_every else None
  pending, pending_start, window_start = [], start_step, time.time()

  def flush_metrics(step: int) -> None:
    nonlocal pending, pending_start, window_start
    try:
      summary = summarize(pending, pending_start)
    except NonFiniteLossError as e:
      last = ckpt.latest_step()
      kept = 'no checkpoint was written yet' if last is None else (
          f'the last good checkpoint (step {last}) in {ckpt.directory} is kept')
      raise NonFiniteLossError(
          f'{e} Training stopped; {kept}. Lower config.optim.lr_g/lr_d, raise '
          "config.training.r1_gamma or use config.training.dtype='float32', then rerun with the "
          'same --workdir to resume.'
      ) from None
    summary['images_per_sec'] = (
        len(pending) * t.batch_size / max(time.time() - window_start, 1e-9)
    )
    writer.write_scalars(step, summary)
    pending, pending_start, window_start = [], step, time.time()

  try:
    with _SigtermFlag() as sigterm:
      for step in range(start_step, num_steps):
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          batch = global_batch(next(train_iter), mesh, per_host)
          state, metrics = train_step(state, batch, steps.applies_r1(config, step))
        pending.append(metrics)
        done = step + 1
        for hook in hooks:
          hook(done)
        preempted = sigterm.received or ckpt.reached_preemption(done)
        save = done % config.checkpoint.every_steps == 0 or done == num_steps or preempted
        if save or done % t.log_every == 0:
          flush_metrics(done)
        if done % t.sample_every == 0:
          samples = generate(state.generator_variables(ema=True), grid_rng,
                             config.sampling.grid_images)
          picture = sampling.samples_picture(samples, config)
          writer.write_images(done, {'ema_samples': picture[None]})
        if evaluator and done % t.eval_every == 0 and not preempted:
          evaluator(state, done)
        if save:
          ckpt.save(state)
        if preempted:
          logging.warning('Preempted: saved the checkpoint at step %d in %s; exiting.', done,
                          ckpt.directory)
          break
  finally:
    ckpt.wait_until_finished()
    ckpt.close()
    if evaluator:
      evaluator.close()
    writer.flush()
  return state
