"""A table of where a traced program's time goes, read from a ``jax.profiler`` trace.

Each XLA operation that ran (a thunk on CPU, a row of the device's "XLA Ops" line on GPU and
TPU) is grouped by its HLO name without the numeric suffix (``ynn_fusion.354`` and
``ynn_fusion.53`` are both ``ynn_fusion``). Times are summed over threads, so on a CPU they add
up to more than the wall time when operations run side by side. An operation that runs inside
another one's span on the same thread (the body of a ``while`` loop) counts toward the outer one.

The trace is the ``.xplane.pb`` file that ``jax.profiler.trace`` writes; it is parsed with the
protocol buffers that TensorFlow ships.
"""

import collections
import dataclasses
import pathlib
import re


def _is_operation(name: str) -> bool:
  """False for the CPU events that wrap, wait for or mark the end of operations
  (``ThunkExecutor::Execute``, ``SlinkyThreadPool::Await``, ``end: ynn_fusion``)."""
  return bool(name) and '::' not in name and not name.startswith('end: ')


@dataclasses.dataclass(frozen=True)
class OpRow:
  """One group of operations.

  Attributes:
    name: the HLO name without its numeric suffix.
    calls: operations run per iteration.
    ms: milliseconds per iteration, summed over threads.
  """

  name: str
  calls: float
  ms: float


def _load_xspace(trace_dir: str):
  try:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RuntimeError(
        'Reading a profiler trace needs the protocol buffers of the tensorflow package '
        f'(tensorflow.tsl.profiler.protobuf), which failed to import ({e}). Install the '
        "project's requirements (pip install -e .) or open the trace in TensorBoard instead."
    ) from None
  files = sorted(pathlib.Path(trace_dir).glob('**/*.xplane.pb'))
  if not files:
    raise FileNotFoundError(f'No .xplane.pb trace under {trace_dir}.')
  space = xplane_pb2.XSpace()
  space.ParseFromString(files[-1].read_bytes())
  return space


def _op_lines(space):
  """(plane, line) pairs whose events are XLA operations: the devices' if any, else the host's."""
  device = [(p, l) for p in space.planes if p.name.startswith('/device:')
            for l in p.lines if l.name == 'XLA Ops']
  if device:
    return device
  return [(p, l) for p in space.planes if p.name.startswith('/host:')
          for l in p.lines if l.name.startswith(('tf_XLAEigen', 'tf_XLAPjRtCpuClient'))]


def op_table(trace_dir: str, iterations: int) -> list[OpRow]:
  """Groups the operations of a trace of ``iterations`` calls.

  Args:
    trace_dir: the directory given to ``jax.profiler.trace``.
    iterations: how many calls of the program the trace holds.

  Returns:
    Rows sorted by time, most first.

  Raises:
    FileNotFoundError: no trace under ``trace_dir``.
    ValueError: the trace holds no XLA operations.
  """
  space = _load_xspace(trace_dir)
  seconds = collections.Counter()
  calls = collections.Counter()
  for plane, line in _op_lines(space):
    names = {i: m.name for i, m in plane.event_metadata.items()}
    outer_end = -1
    for event in sorted(line.events, key=lambda e: e.offset_ps):
      name = names.get(event.metadata_id, '')
      if not _is_operation(name) or event.offset_ps < outer_end:
        continue
      outer_end = event.offset_ps + event.duration_ps
      group = re.sub(r'\.\d+$', '', name)
      seconds[group] += event.duration_ps * 1e-12
      calls[group] += 1
  if not calls:
    raise ValueError(f'The trace under {trace_dir} holds no XLA operations.')
  return [OpRow(name, calls[name] / iterations, 1e3 * s / iterations)
          for name, s in seconds.most_common()]


def format_table(rows: list[OpRow], wall_s: float, traced_s: float, top: int = 15) -> str:
  """A markdown table of the ``top`` groups, after a line with the totals.

  Args:
    rows: ``op_table``'s rows.
    wall_s: seconds per iteration without the tracer.
    traced_s: seconds per iteration while traced.
  """
  total_ms = sum(r.ms for r in rows)
  ops_per_iteration = sum(r.calls for r in rows)
  lines = [f'{ops_per_iteration:,.0f} operations per iteration taking {total_ms:.1f} ms '
           f'(summed over threads; {1e3 * total_ms / ops_per_iteration:.1f} us each) '
           f'in an iteration of {1e3 * wall_s:.1f} ms ({1e3 * traced_s:.1f} ms while traced).',
           '', '| operation | per iteration | ms per iteration | share |', '|---|---|---|---|']
  for row in rows[:top]:
    lines.append(f'| {row.name} | {row.calls:,.1f} | {row.ms:.2f} | '
                 f'{100 * row.ms / total_ms:.1f}% |')
  return '\n'.join(lines)
