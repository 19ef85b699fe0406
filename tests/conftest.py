"""Test set-up: 8 simulated CPU devices for the sharding tests, TensorFlow kept off accelerators,
and one persistent compilation cache per test session for the command-line subprocesses."""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='ddgan_jax_xla_'))
