"""The benchmark tool: every row is timed and positive, and the table prints."""

from ddgan_jax import benchmark
from tests.configs import tiny


def test_benchmark_rows_on_the_tiny_toy_config():
  config = tiny.get_config()
  rows = benchmark.run(config, batch=16, repeats=2)
  names = [name for name, *_ in rows]
  assert names[:3] == ['generator forward', 'discriminator forward', 'training iteration (D+G)']
  assert names[3].startswith('sampling, T=4')
  for _, first, median, derived in rows:
    assert first > 0 and median > 0 and derived
