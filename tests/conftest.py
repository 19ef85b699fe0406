"""Test set-up: 8 simulated CPU devices for the sharding tests, TensorFlow kept off accelerators,
one persistent compilation cache per test session for the command-line subprocesses, and one
digits classifier cache per session."""

import os
import tempfile

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='ddgan_jax_xla_'))


@pytest.fixture(scope='session')
def digits_classifier_cache(tmp_path_factory):
  """A classifier cache the test modules share, so that each digits classifier trains once."""
  return str(tmp_path_factory.mktemp('classifier_cache'))
