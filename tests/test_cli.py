"""The command line, through subprocesses: device-count and resume invariance, clear errors.

The samples are drawn in-process with ``ddgan_jax.load_sampler``, which equals ``--mode=sample``
byte for byte (test_sampling.py, which also runs ``--mode=sample`` on 1 and 8 devices).
"""

import concurrent.futures
import shutil

import numpy as np

import ddgan_jax
from tests import runs


def _sample(workdir, step):
  """12 EMA samples (uint8) of the last checkpoint, drawn as ``--mode=sample`` draws them."""
  sampler = ddgan_jax.load_sampler(str(workdir))
  assert sampler.step == step
  return sampler.sample(12, seed=3)


def test_eight_devices_resumed_sample_what_one_device_straight_through_does(digits_run, tmp_path):
  straight = _sample(digits_run, 4)  # tiny_digits on 1 device, steps 0 to 4 (tests/conftest.py).
  assert straight.shape == (12, 16, 16, 1) and straight.dtype == np.uint8
  assert straight.std() > 20  # Far from flat grey: agreement within 1 grey level means something.
  # One run that changes the device count where it resumes, from the straight run's step-2
  # checkpoint and its saved config alone: a broken resume or 8-device step breaks the agreement.
  # (The parameters themselves are not compared: the attention key biases get no gradient but
  # rounding noise, which Adam turns into full-size steps, so they differ between device counts
  # by design.)
  eight = tmp_path / 'eight'
  shutil.copytree(digits_run / 'checkpoints' / '2', eight / 'checkpoints' / '2')
  shutil.copy(digits_run / 'config.json', eight)
  cache = tmp_path / 'xla_cache'
  proc = runs.run_cli([f'--workdir={eight}', f'--compilation_cache_dir={cache}'], devices=8)
  assert 'Resuming from the checkpoint at step 2' in proc.stderr
  assert any(cache.iterdir())  # It wrote its programs to the --compilation_cache_dir.
  assert np.abs(straight.astype(int) - _sample(eight, 4).astype(int)).max() <= 1


def test_eval_on_a_dataset_without_metrics_fails_clearly(tmp_path):
  proc = runs.run_cli(['--config=tests/configs/tiny_digits.py', f'--workdir={tmp_path}',
                       '--mode=eval', '--config.data.dataset=mnist'], devices=1, check=False)
  assert proc.returncode != 0
  assert "supports 'toy2d', 'digits'" in proc.stderr


def test_sample_without_checkpoint_and_bad_batch_fail_clearly(tmp_path):
  with concurrent.futures.ThreadPoolExecutor() as pool:  # Both start-ups at once.
    sample = pool.submit(runs.run_cli, ['--config=tests/configs/tiny.py',
                                        f'--workdir={tmp_path / "a"}', '--mode=sample'],
                         devices=1, check=False)
    train = pool.submit(runs.run_cli, ['--config=tests/configs/tiny.py',
                                       f'--workdir={tmp_path / "b"}',
                                       '--config.training.batch_size=12'],
                        devices=8, check=False)
  proc = sample.result()
  assert proc.returncode != 0 and 'Train first' in proc.stderr
  proc = train.result()
  assert proc.returncode != 0 and 'multiple of the device count (8)' in proc.stderr
  assert not (tmp_path / 'b' / 'checkpoints' / '0').exists()
