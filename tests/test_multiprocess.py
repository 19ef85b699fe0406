"""Two processes of 4 CPU devices each, through the command line, against one of 8 devices.

The processes coordinate on 127.0.0.1 exactly as hosts of a pod do (--coordinator_address,
--num_processes, --process_id). The one-process reference trains in the test process itself (8
simulated devices, tests/conftest.py), which saves a subprocess start.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import ddgan_jax
from ddgan_jax import checkpoints
from ddgan_jax import distributed
from ddgan_jax import evaluation
from ddgan_jax import input_pipeline
from ddgan_jax import run_config
from ddgan_jax import sampling
from ddgan_jax import train
from tests import inception_fixture
from tests import tolerances
from tests.configs import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_two(workdir, per_process_args, common_args, config='tests/configs/tiny.py',
               name='process'):
  """Starts processes 0 and 1 of one run; returns [(Popen, log path)].

  ``config`` is the --config flag's value; None leaves the flag out (the workdir's config.json).
  """
  env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS.values()}
  env.update(XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu')
  address = f'127.0.0.1:{_free_port()}'
  started = []
  for i, extra in enumerate(per_process_args):
    log = workdir.parent / f'{workdir.name}.{name}{i}.log'
    args = [sys.executable, '-m', 'ddgan_jax.main', *([f'--config={config}'] if config else []),
            f'--workdir={workdir}', f'--coordinator_address={address}', '--num_processes=2',
            f'--process_id={i}', *common_args, *extra]
    with open(log, 'w') as f:
      started.append((subprocess.Popen(args, cwd=REPO, env=env, stdout=f,
                                       stderr=subprocess.STDOUT), log))
  return started


def _wait_all(started, timeout_s=TIMEOUT_S):
  deadline = time.time() + timeout_s
  try:
    return [p.wait(timeout=max(1.0, deadline - time.time())) for p, _ in started]
  finally:
    for p, _ in started:
      if p.poll() is None:
        p.kill()


def _wait_for_line(log: pathlib.Path, text: str, proc: subprocess.Popen) -> None:
  deadline = time.time() + TIMEOUT_S
  while text not in log.read_text():
    assert proc.poll() is None, f'exited before {text!r}:\n{log.read_text()[-4000:]}'
    assert time.time() < deadline, f'no {text!r} after {TIMEOUT_S} s'
    time.sleep(0.2)


def _config(num_steps):
  config = tiny.get_config()
  config.training.num_steps = num_steps
  config.training.sample_every = 1000
  config.checkpoint.every_steps = 2
  return config


def test_each_process_reads_its_own_rows_and_together_the_whole_batch():
  config = _config(2)
  whole = next(input_pipeline.create_dataset(config, process_index=0, process_count=1)[0])
  parts = [next(input_pipeline.create_dataset(config, process_index=p, process_count=2)[0])
           for p in range(2)]
  half = config.training.batch_size // 2
  assert all(p['image'].shape == (half, 2) for p in parts)
  np.testing.assert_array_equal(np.concatenate([p['image'] for p in parts]), whole['image'])


def test_two_processes_resume_one_process_run_stop_together_on_sigterm_and_match_it(tmp_path):
  """1-process checkpoint -> 2 processes, SIGTERM to one -> both save step N -> 1 process reads it.

  The 2-process run is stopped by the SIGTERM, so its last step N is only known afterwards; the
  one-process reference then continues from its own step-2 checkpoint to N. The 2-process run
  also evaluates every 2 steps, and the SIGTERM waits for its first evaluation.
  """
  one, two = tmp_path / 'one', tmp_path / 'two'
  train.train_and_evaluate(_config(2), str(one))
  shutil.copytree(one / 'checkpoints' / '2', two / 'checkpoints' / '2')
  started = _start_two(two, [[], []], ['--config.training.num_steps=1000000',
                                       '--config.checkpoint.every_steps=1000000',
                                       '--config.training.sample_every=1000',
                                       '--config.training.eval_every=2',
                                       '--config.eval.num_samples_train=20',
                                       '--config.eval.batch_size=16'])
  (p0, log0), (p1, log1) = started
  _wait_for_line(log1, 'Resuming from the checkpoint at step 2', p1)
  _wait_for_line(log1, 'Step 4: reverse_kl', p1)
  p1.send_signal(signal.SIGTERM)
  codes = _wait_all(started)
  logs = [log0.read_text(), log1.read_text()]
  assert codes == [0, 0], f'exit codes {codes}:\n' + '\n'.join(l[-3000:] for l in logs)
  (saved,) = [int(p.name) for p in (two / 'checkpoints').iterdir() if p.name != '2']
  assert 2 < saved < 1000000
  for log in logs:
    assert f'Preempted: saved the checkpoint at step {saved}' in log
    assert 'JAX process' in log and 'of 2;' in log
  evaluated = [re.findall(r'Step (\d+): reverse_kl (\S+) on 20 samples', log) for log in logs]
  assert evaluated[0] == evaluated[1] and evaluated[0][0][0] == '4'
  best = checkpoints.BestCheckpointer(str(two), 'reverse_kl')
  best_step, best_value = best.best()
  best.close()
  assert (str(best_step), f'{best_value:.4f}') in evaluated[0]

  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))
  from_two = sampling.restore_state(_config(saved), str(two), mesh)
  reference = train.train_and_evaluate(_config(saved), str(one))
  assert int(from_two.step) == int(reference.step) == saved
  params = lambda s: (s.g_params, s.d_params, s.ema_params)
  tolerances.assert_trees_close(params(from_two), params(reference), 1e-5, 'params')
  tolerances.assert_trees_close((from_two.g_opt_state, from_two.d_opt_state),
                                (reference.g_opt_state, reference.d_opt_state), 1e-4, 'adam')


def test_two_processes_sample_every_row_once_equal_to_one_process(tmp_path):
  """--mode=sample on 2 processes: each writes its own rows; together each row exactly once."""
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_config(2), str(workdir))
  num = 40
  started = _start_two(workdir, [[], []], ['--mode=sample', f'--config.sampling.num_images={num}',
                                           '--config.sampling.shard_size=7'])
  codes = _wait_all(started)
  assert codes == [0, 0], '\n'.join(log.read_text()[-3000:] for _, log in started)
  (out_dir,) = [p for p in (workdir / 'samples').iterdir() if p.is_dir()]
  rows = {}
  for path in out_dir.iterdir():
    first, end = (int(n) for n in path.stem.split('_')[1:])
    with np.load(path) as f:
      shard = f['samples']
    assert len(shard) == end - first <= 7
    for i in range(first, end):
      assert i not in rows, f'row {i} written twice'
      rows[i] = shard[i - first]
  assert sorted(rows) == list(range(num))
  expected = ddgan_jax.load_sampler(str(workdir)).sample_float(num, seed=_config(2).seed)
  tolerances.assert_trees_close(np.stack([rows[i] for i in range(num)]), expected, 1e-5,
                                'samples')


def _matches(started, pattern):
  """The first match of ``pattern`` in each process's log, asserting that each has one."""
  found = [re.search(pattern, log.read_text()) for _, log in started]
  assert all(found), '\n'.join(log.read_text()[-3000:] for _, log in started)
  return found


@pytest.mark.slow  # Six scipy square roots of 2048 x 2048 matrices, and compilation: many minutes.
def test_two_processes_score_fid_in_training_and_eval_as_one_process(tmp_path):
  """FID during training (PNG) and --mode=eval (JPEG) of an image run on 2 processes."""
  config = inception_fixture.tiny_image_config(tmp_path, str(tmp_path / 'cache0'))
  config.eval.num_samples = config.eval.num_samples_train = 16  # Two rows per device.
  config.training.num_steps = config.training.eval_every = 2
  workdir = tmp_path / 'run'
  run_config.record(config, str(workdir), has_checkpoints=False)

  started = _start_two(workdir, [[], []], [], config=None, name='train')
  codes = _wait_all(started, timeout_s=1800)
  assert codes == [0, 0], '\n'.join(log.read_text()[-3000:] for _, log in started)
  during = [m.group(1) for m in _matches(started, r'Step 2: fid (\S+) on 16 samples')]
  assert during[0] == during[1]

  # Process 1 looks for the reference in an empty cache (another host's disk): both compute it.
  started = _start_two(
      workdir, [[], [f'--config.eval.cache_dir={tmp_path / "cache1"}']],
      ['--mode=eval', '--config.eval.image_format=jpeg'], config=f'configs/saved.py:{workdir}',
      name='eval')
  codes = _wait_all(started, timeout_s=1800)
  assert codes == [0, 0], '\n'.join(log.read_text()[-3000:] for _, log in started)
  _matches(started, 'Computing the FID reference features of 16 training images')
  logged = [m.group(1) for m in _matches(started, r'Step 2, npz: (FID .*) \(reference')]
  assert logged[0] == logged[1]
  two = json.loads((workdir / 'eval' / 'metrics_step2.json').read_text())

  numbers = lambda m: (m['fid'], m['inception_score']['mean'], m['inception_score']['std'],
                       m['precision'], m['recall'])
  png = evaluation.evaluate(config, str(workdir))  # The samples FID was measured on in training.
  assert float(during[0]) == pytest.approx(png['fid'], rel=1e-3)
  config.eval.image_format = 'jpeg'
  one = evaluation.evaluate(config, str(workdir))
  assert two['device_count'] == one['device_count'] == 8 and two['image_format'] == 'jpeg'
  assert numbers(two) == pytest.approx(numbers(one), rel=1e-3)
  assert numbers(one) != pytest.approx(numbers(png), rel=1e-3)


def test_an_error_in_one_process_stops_both_with_its_message(tmp_path):
  # Only process 1 gets a bad config: process 0 goes on to wait for it in a collective.
  started = _start_two(tmp_path / 'run', [[], ['--config.data.toy=bogus']],
                       ['--heartbeat_timeout_s=5', '--config.training.num_steps=1000'])
  start = time.time()
  codes = _wait_all(started)
  logs = [log.read_text() for _, log in started]
  assert all(c != 0 for c in codes), codes
  assert time.time() - start < TIMEOUT_S
  assert "Unknown toy dataset 'bogus'" in logs[1]
  assert 'Process 1 of 2 failed' in logs[1]
  assert 'JAX distributed service detected fatal errors' in logs[0], logs[0][-3000:]


def test_a_process_that_never_joins_stops_the_others_after_join_timeout_s(tmp_path):
  started = _start_two(tmp_path / 'run', [[]], ['--join_timeout_s=3'])  # Process 1 never starts.
  start = time.time()
  assert _wait_all(started, timeout_s=60) != [0]
  assert time.time() - start < 60
  log = started[0][1].read_text()
  assert 'waiting up to 3 s (--join_timeout_s)' in log and 'DEADLINE_EXCEEDED' in log, log[-3000:]


@pytest.mark.parametrize('flags, environ, expected', [
    (dict(distributed=False), {}, None),
    (dict(distributed=True), {}, distributed.ProcessSpec()),
    (dict(coordinator_address='h:1', num_processes=2, process_id=1), {},
     distributed.ProcessSpec('h:1', 2, 1)),
    (dict(), dict(JAX_COORDINATOR_ADDRESS='h:1', JAX_NUM_PROCESSES='4', JAX_PROCESS_ID='3'),
     distributed.ProcessSpec('h:1', 4, 3)),
    (dict(process_id=0), dict(JAX_COORDINATOR_ADDRESS='h:1', JAX_NUM_PROCESSES='4'),
     distributed.ProcessSpec('h:1', 4, 0)),
])
def test_resolve_reads_flags_then_environment(flags, environ, expected):
  args = dict(distributed=False, coordinator_address=None, num_processes=None, process_id=None)
  assert distributed.resolve(**(args | flags), environ=environ) == expected


@pytest.mark.parametrize('flags, environ, message', [
    (dict(coordinator_address='h:1'), {},
     r'not --num_processes \(or JAX_NUM_PROCESSES\) and --process_id'),
    (dict(), dict(JAX_COORDINATOR_ADDRESS='h:1'), 'got JAX_COORDINATOR_ADDRESS=h:1 but not'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=2), {}, r'must be in \[0, '),
    (dict(coordinator_address='h', num_processes=2, process_id=0), {}, 'must be HOST:PORT'),
    (dict(), dict(JAX_COORDINATOR_ADDRESS='h:1', JAX_NUM_PROCESSES='two', JAX_PROCESS_ID='0'),
     'JAX_NUM_PROCESSES=.two. must be an integer'),
    (dict(join_timeout_s=0), {}, '--join_timeout_s=0 must be at least 1'),
])
def test_resolve_rejects_partial_or_bad_settings(flags, environ, message):
  args = dict(distributed=True, coordinator_address=None, num_processes=None, process_id=None)
  with pytest.raises(ValueError, match=message):
    distributed.resolve(**(args | flags), environ=environ)
