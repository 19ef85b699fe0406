"""The command line, through subprocesses: device-count and resume invariance, clear errors.

The samples are drawn in-process with ``ddgan_jax.load_sampler``, which equals ``--mode=sample``
byte for byte (test_sampling.py, which also runs ``--mode=sample`` on 1 and 8 devices).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np

import ddgan_jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(args, devices=8, check=True):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.run([sys.executable, '-m', 'ddgan_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _train_then_sample(workdir, devices, steps_per_run, cache=''):
  """Trains tiny_digits through the CLI, stopping after each entry of ``steps_per_run``; returns
  12 EMA samples (uint8) of the last checkpoint, drawn as ``--mode=sample`` draws them."""
  common = ['--config=tests/configs/tiny_digits.py', f'--workdir={workdir}', '--config.seed=3',
            f'--compilation_cache_dir={cache}', '--config.training.batch_size=8',
            '--config.checkpoint.every_steps=2', '--config.training.sample_every=1000']
  for num_steps in steps_per_run:
    _run(common + [f'--config.training.num_steps={num_steps}'], devices)
  sampler = ddgan_jax.load_sampler(str(workdir))
  assert sampler.step == steps_per_run[-1]
  return sampler.sample(12, seed=3)


def test_eight_devices_resumed_sample_what_one_device_straight_through_does(tmp_path):
  one = _train_then_sample(tmp_path / 'one', 1, [4])
  assert one.shape == (12, 8, 8, 1) and one.dtype == np.uint8
  assert one.std() > 20  # Far from flat grey, so agreement within 1 grey level means something.
  # One run that changes both the device count and stops halfway: either breaking shows here.
  # Its second half loads its programs from the persistent compilation cache. (The parameters
  # themselves are not compared: the attention key biases get no gradient but rounding noise,
  # which Adam turns into full-size steps, so they differ between device counts by design.)
  cache = tmp_path / 'xla_cache'
  eight_resumed = _train_then_sample(tmp_path / 'eight', 8, [2, 4], cache=str(cache))
  assert any(cache.iterdir())
  assert np.abs(one.astype(int) - eight_resumed.astype(int)).max() <= 1


def test_eval_on_a_dataset_without_metrics_fails_clearly(tmp_path):
  proc = _run(['--config=tests/configs/tiny_digits.py', f'--workdir={tmp_path}', '--mode=eval',
               '--config.data.dataset=mnist'], devices=1, check=False)
  assert proc.returncode != 0
  assert "supports 'toy2d', 'digits'" in proc.stderr


def test_sample_without_checkpoint_and_bad_batch_fail_clearly(tmp_path):
  proc = _run(['--config=tests/configs/tiny.py', f'--workdir={tmp_path}', '--mode=sample'],
              devices=1, check=False)
  assert proc.returncode != 0 and 'Train first' in proc.stderr
  proc = _run(['--config=tests/configs/tiny.py', f'--workdir={tmp_path}',
               '--config.training.batch_size=12'], devices=8, check=False)
  assert proc.returncode != 0 and 'multiple of the device count (8)' in proc.stderr
  assert not (tmp_path / 'checkpoints' / '0').exists()
