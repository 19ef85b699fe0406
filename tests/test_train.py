"""The training loop: resume equals straight through, checkpoint fallback, NaN guard, preemption."""

import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from ddgan_jax import checkpoints
from ddgan_jax import sampling
from ddgan_jax import steps
from ddgan_jax import train
from tests.configs import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(num_steps):
  config = tiny.get_config()
  config.training.num_steps = num_steps
  return config


def _assert_states_equal(a, b):
  for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))):
    np.testing.assert_array_equal(x, y)


def _corrupt(step_dir: pathlib.Path):
  for f in step_dir.rglob('*'):
    if f.is_file() and f.parent.name == 'd':
      f.write_bytes(b'garbage')


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """A 6-step run in one go (checkpoints at 3 and 6)."""
  workdir = tmp_path_factory.mktemp('straight')
  return train.train_and_evaluate(_config(6), str(workdir)), workdir


def test_stop_and_resume_equals_straight_through(straight, tmp_path):
  state6, workdir = straight
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == [3, 6]
  assert list(workdir.glob('events.out.tfevents.*'))
  half = train.train_and_evaluate(_config(3), str(tmp_path))
  assert int(half.step) == 3
  resumed = train.train_and_evaluate(_config(6), str(tmp_path))
  assert int(resumed.step) == 6
  _assert_states_equal(resumed, state6)
  # A finished run restarted does nothing and returns the saved state.
  _assert_states_equal(train.train_and_evaluate(_config(6), str(tmp_path)), state6)


def test_unreadable_newest_checkpoint_falls_back(straight, tmp_path):
  state6, _ = straight
  train.train_and_evaluate(_config(6), str(tmp_path))
  _corrupt(tmp_path / 'checkpoints' / '6')
  # Resumes from 3, moves 6 aside, and trains 3 -> 6 again exactly as before.
  resumed = train.train_and_evaluate(_config(6), str(tmp_path))
  _assert_states_equal(resumed, state6)
  assert (tmp_path / checkpoints.UNREADABLE_DIR / '6').is_dir()
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [3, 6]


def test_incompatible_checkpoints_give_clear_error_and_stay(straight):
  _, workdir = straight
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  config = _config(9)
  config.model.mlp_hidden = 8
  with pytest.raises(ValueError, match='model.mlp_hidden: 8 vs saved 32'):
    train.train_and_evaluate(config, str(workdir))
  # Without the saved config (a workdir older than saved configs) the restore itself fails.
  saved, aside = workdir / 'config.json', workdir / 'config.json.aside'
  saved.rename(aside)
  try:
    with pytest.raises(RuntimeError, match='None of the checkpoints.*could be restored'):
      train.train_and_evaluate(config, str(workdir))
    assert not saved.exists()
    # The programs compiling meanwhile did not outlive the call (they would compile into the
    # next test's compile counts).
    for thread in threading.enumerate():
      if thread.name.startswith('compile_train_step'):
        thread.join(timeout=2.0)
        assert not thread.is_alive(), 'a compilation outlived the failed run'
  finally:
    aside.rename(saved)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before
  assert not (workdir / checkpoints.UNREADABLE_DIR).exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  make = steps.make_train_step

  def make_poisoned(*args):
    step = make(*args)

    def iteration_step(state, batch, r1):
      new_state, metrics = step.iteration_step(state, batch, r1)
      metrics['g_loss'] = jax.numpy.where(state.step == 4, jax.numpy.nan, metrics['g_loss'])
      return new_state, metrics

    return dataclasses.replace(step, iteration_step=iteration_step)

  monkeypatch.setattr(steps, 'make_train_step', make_poisoned)
  with pytest.raises(train.NonFiniteLossError, match=r'g_loss is nan at training step 4.*step 3'):
    train.train_and_evaluate(_config(9), str(tmp_path))
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['3']


def test_summarize_averages_r1_over_applied_steps():
  per_step = [{'d_loss': 1.0, 'g_loss': 2.0, 'r1': r1, 'r1_applied': a}
              for r1, a in ((0.4, 1.0), (0.0, 0.0), (0.2, 1.0))]
  summary = train.summarize([{k: np.float32(v) for k, v in m.items()} for m in per_step], 0)
  assert summary['r1'] == pytest.approx(0.3) and summary['g_loss'] == 2.0
  with pytest.raises(train.NonFiniteLossError, match='d_loss is inf at training step 11'):
    train.summarize([{'d_loss': np.float32(np.inf), 'g_loss': np.float32(0), 'r1': 0,
                      'r1_applied': 0}], 11)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'ddgan_jax.main', '--config=tests/configs/tiny.py',
       f'--workdir={tmp_path}', '--config.training.num_steps=1000000',
       '--config.training.log_every=100', '--config.training.sample_every=1000000',
       '--config.checkpoint.every_steps=100'],
      cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while not (tmp_path / 'checkpoints' / '100').is_dir():
      assert proc.poll() is None and time.time() < deadline, 'training did not start'
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-3000:]
  logged = re.search(r'Preempted: saved the checkpoint at step (\d+)', err)
  assert logged, err[-3000:]
  saved = max(int(p.name) for p in (tmp_path / 'checkpoints').iterdir())
  assert int(logged.group(1)) == saved > 100


def test_image_grid_places_every_tile_between_borders():
  images = np.arange(5 * 2 * 3 * 1, dtype=np.uint8).reshape(5, 2, 3, 1)
  grid = sampling.image_grid(images, gap=1)
  assert grid.shape == (2 * (2 + 1) + 1, 3 * (3 + 1) + 1, 1)  # 2 rows, 3 columns.
  np.testing.assert_array_equal(grid[1:3, 1:4], images[0])
  np.testing.assert_array_equal(grid[4:6, 5:8], images[4])
  # Corner border, the border between rows, and the empty sixth cell.
  assert grid[0, 0, 0] == 128 and grid[3, 4, 0] == 128 and np.all(grid[4:6, 9:12] == 128)
