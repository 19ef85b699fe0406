"""Test set-up: 8 simulated CPU devices for the sharding tests, TensorFlow kept off accelerators,
one persistent compilation cache per test session for the command-line subprocesses, one digits
classifier cache per session, and a digits run trained through the command line, shared by the
tests that only read it."""

import os
import pathlib
import tempfile

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='ddgan_jax_xla_'))

from tests import runs  # pylint: disable=wrong-import-position  # JAX reads the settings above.


def pytest_collection_modifyitems(items):
  """Under pytest-xdist (--dist loadgroup), the tests of the shared digits run share one worker,
  so that it trains once."""
  for item in items:
    if 'digits_run' in item.fixturenames:
      item.add_marker(pytest.mark.xdist_group('digits_run'))


@pytest.fixture(scope='session')
def digits_classifier_cache(tmp_path_factory):
  """A classifier cache the test modules share, so that each digits classifier trains once."""
  return str(tmp_path_factory.mktemp('classifier_cache'))


@pytest.fixture(scope='session')
def digits_run(tmp_path_factory) -> pathlib.Path:
  """A workdir of tests/configs/tiny_digits.py trained straight through to step 4 by the command
  line on 1 device (checkpoints at steps 2 and 4, no compilation cache), at 16x16, the digits
  classifier's size, with one level.

  test_cli.py resumes its step-2 checkpoint on 8 devices; test_evaluation.py scores it. Seed 2
  makes the samples far from flat grey and their agreement sensitive: reading the wrong batches
  after the resume, or losing the EMA there, moves them by 23 and 15 grey levels.
  """
  workdir = tmp_path_factory.mktemp('digits_run')
  runs.run_cli(['--config=tests/configs/tiny_digits.py', f'--workdir={workdir}', '--config.seed=2',
                '--compilation_cache_dir=', '--config.training.sample_every=1000',
                '--config.model.image_size=16', '--config.model.ch_mult=(1,)',
                '--config.model.attn_resolutions=(16,)'], devices=1)
  return workdir
