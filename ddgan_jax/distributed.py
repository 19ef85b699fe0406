"""Joining a multi-process JAX run: an explicit coordinator, or the cluster's own variables.

Every process of a run (a TPU VM worker, a SLURM task, or one of several processes on one
machine) calls ``initialize`` before any other JAX call. Two ways in:

  explicit     --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or the
               environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
               JAX_PROCESS_ID (a flag wins over its variable). All three are needed.
  auto-detect  --distributed alone: jax.distributed.initialize() reads the TPU VM metadata or
               SLURM's variables (SLURM_NTASKS, SLURM_PROCID, ...) itself.

On CPU, cross-process collectives go through gloo (TCP), which needs the coordinator's client,
so the setting is made here, before any backend starts.
"""

from collections.abc import Iterator, Mapping
import contextlib
import dataclasses
import os
import sys
import traceback

from absl import logging
import jax

ENV_VARS = {
    'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
    'num_processes': 'JAX_NUM_PROCESSES',
    'process_id': 'JAX_PROCESS_ID',
}


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """How this process joins a multi-process run; all fields None means auto-detect.

  Attributes:
    coordinator_address: 'HOST:PORT' of process 0's coordinator service.
    num_processes: the number of processes in the run.
    process_id: this process, in [0, num_processes).
    heartbeat_timeout_s: seconds without a heartbeat after which the coordinator declares a
      process dead and stops the others.
    join_timeout_s: seconds each process waits for all of them to join at start-up; after
      that, JAX aborts the processes that did join (a process that never started, or a wrong
      address or count).
  """
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  heartbeat_timeout_s: int = 100
  join_timeout_s: int = 300


def _as_int(name: str, value: int | str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name}={value!r} must be an integer.') from None


def resolve(
    distributed: bool,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    environ: Mapping[str, str],
    heartbeat_timeout_s: int = 100,
    join_timeout_s: int = 300,
) -> ProcessSpec | None:
  """Works out from the flags and the environment whether and how to join a multi-process run.

  Args:
    distributed: the --distributed flag.
    coordinator_address: the --coordinator_address flag (None when not given).
    num_processes: the --num_processes flag (None when not given).
    process_id: the --process_id flag (None when not given).
    environ: the environment, read for ``ENV_VARS`` where a flag is not given.
    heartbeat_timeout_s: see ``ProcessSpec``.
    join_timeout_s: see ``ProcessSpec``.

  Returns:
    None for a single-process run; else the ``ProcessSpec`` to pass to ``initialize``.

  Raises:
    ValueError: some but not all of the three explicit settings are given, they are
      inconsistent, or a timeout is not positive; the message names what is wrong.
  """
  for name, seconds in (('heartbeat_timeout_s', heartbeat_timeout_s),
                        ('join_timeout_s', join_timeout_s)):
    if seconds < 1:
      raise ValueError(f'--{name}={seconds} must be at least 1 (seconds).')
  timeouts = dict(heartbeat_timeout_s=heartbeat_timeout_s, join_timeout_s=join_timeout_s)
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  values, sources = {}, {}
  for name, value in given.items():
    if value is not None:
      values[name], sources[name] = value, f'--{name}'
    elif environ.get(ENV_VARS[name]):
      values[name], sources[name] = environ[ENV_VARS[name]], ENV_VARS[name]
  if not values:
    return ProcessSpec(**timeouts) if distributed else None
  missing = [f'--{name} (or {ENV_VARS[name]})' for name in given if name not in values]
  if missing:
    have = ', '.join(f'{sources[n]}={values[n]}' for n in values)
    raise ValueError(
        f'A multi-process run needs the coordinator address, the process count and this '
        f'process id together; got {have} but not {" and ".join(missing)}. Give all three, or '
        'none of them and --distributed to detect them on a TPU VM or under SLURM.'
    )
  count = _as_int(sources['num_processes'], values['num_processes'])
  index = _as_int(sources['process_id'], values['process_id'])
  if count < 1 or not 0 <= index < count:
    raise ValueError(
        f'{sources["process_id"]}={index} must be in [0, {sources["num_processes"]}={count}).'
    )
  address = str(values['coordinator_address'])
  if ':' not in address:
    raise ValueError(
        f'{sources["coordinator_address"]}={address!r} must be HOST:PORT, e.g. 10.0.0.2:8476 '
        '(process 0\'s address and a free port there).'
    )
  return ProcessSpec(address, count, index, **timeouts)


def initialize(spec: ProcessSpec | None) -> None:
  """Joins the run described by ``spec`` (nothing for None); call before any other JAX call."""
  if spec is None:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  where = (f'process {spec.process_id} of {spec.num_processes} at {spec.coordinator_address}'
           if spec.coordinator_address else 'a run detected from the cluster')
  logging.info('Joining %s; waiting up to %d s (--join_timeout_s) for every process to join, '
               'then JAX aborts with DEADLINE_EXCEEDED.', where, spec.join_timeout_s)
  jax.distributed.initialize(
      coordinator_address=spec.coordinator_address,
      num_processes=spec.num_processes,
      process_id=spec.process_id,
      heartbeat_timeout_seconds=spec.heartbeat_timeout_s,
      initialization_timeout=spec.join_timeout_s,
  )
  logging.info('Joined a run of %d processes as process %d.', jax.process_count(),
               jax.process_index())


@contextlib.contextmanager
def exit_all_on_error() -> Iterator[None]:
  """Makes an error in one process of a multi-process run stop every process.

  Left alone, a failing process would wait at JAX's shutdown barrier for the others, while they
  wait for it in their next collective. Instead the failing process prints its traceback and
  exits at once (status 1); the coordinator then misses its heartbeats and stops the others
  (within --heartbeat_timeout_s), naming the dead process. Single-process runs are not touched.
  Use it as a context manager or as a decorator (of ``main``).

  Yields:
    Nothing; wraps the work of the run.
  """
  try:
    yield
  except (Exception, KeyboardInterrupt):  # pylint: disable=broad-exception-caught
    if jax.process_count() == 1:
      raise
    traceback.print_exc()
    print(f'Process {jax.process_index()} of {jax.process_count()} failed (above); exiting so '
          'that the coordinator stops the other processes.', file=sys.stderr, flush=True)
    logging.flush()
    os._exit(1)  # pylint: disable=protected-access
