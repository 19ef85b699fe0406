"""The benchmark tool: every figure is measured and positive, and --json prints one parsable line."""

import json
import pathlib
import subprocess
import sys

import jax
import pytest

from ddgan_jax import benchmark
from ddgan_jax import profile_table
from tests.configs import tiny

REPO = pathlib.Path(__file__).resolve().parents[1]

_FIELDS = ('train_step_s', 'train_img_s', 'compile_s', 'sample_s_per_100', 'sample_s_batch1',
           'peak_memory_bytes', 'flops_per_iteration')


def test_benchmark_figures_on_the_tiny_toy_config(tmp_path):
  result = benchmark.run(tiny.get_config(), batch=16, repeats=2, profile_dir=str(tmp_path))
  names = [name for name, *_ in result['rows']]
  assert names == ['generator forward', 'discriminator forward',
                   'training iteration (D+G), without R1', 'training iteration (D+G), with R1',
                   'training iteration, mean with R1 every 2',
                   'sampling, T=4, batch 16', 'sampling, T=4, batch 1']
  for _, first, median, derived in result['rows']:
    assert first > 0 and median > 0 and derived
  # lazy_reg 2: the mean of one iteration without R1 and one with it.
  plain, with_r1 = (median for _, _, median, _ in result['rows'][2:4])
  assert abs(result['train_step_s'] - (plain + with_r1) / 2) < 1e-12
  assert result['rows'][4][1] == result['compile_s']
  for field in _FIELDS:
    assert result[field] > 0, field
  assert abs(result['train_img_s'] * result['train_step_s'] - 16) < 1e-9
  assert result['peak_fraction'] is None  # No peak is known for CPUs.
  profile = result['profile']
  assert list(tmp_path.glob('**/*.xplane.pb'))
  groups = profile['groups']
  assert profile['ops_per_iteration'] == sum(calls for _, calls, _ in groups) > 10
  assert [ms for *_, ms in groups] == sorted((ms for *_, ms in groups), reverse=True)
  assert groups[-1][2] >= 0 and profile['traced_s_per_iteration'] > 0
  # Operations only: no executor wrappers, and names without their numeric suffix.
  for name, _, _ in groups:
    assert '::' not in name and not name[-1].isdigit(), name
  assert profile['table'].splitlines()[2] == (
      '| operation | per iteration | ms per iteration | share |')


def test_profile_table_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='No .xplane.pb trace'):
    profile_table.op_table(str(tmp_path), 1)
  with jax.profiler.trace(str(tmp_path)):
    pass
  with pytest.raises(ValueError, match='holds no XLA operations'):
    profile_table.op_table(str(tmp_path), 1)


def test_peak_flops_lookup():
  assert benchmark.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert benchmark.peak_flops('TPU v4', 'float32') is None
  assert benchmark.peak_flops('cpu', 'float32') is None


def test_json_flag_prints_one_line_with_every_field():
  out = subprocess.run(
      [sys.executable, '-m', 'ddgan_jax.benchmark', '--config=tests/configs/tiny.py',
       '--batch_size=8', '--repeats=1', '--json'],
      capture_output=True, text=True, check=True, timeout=300, cwd=REPO)
  lines = [l for l in out.stdout.splitlines() if l.strip()]
  assert len(lines) == 1, out.stdout
  result = json.loads(lines[0])
  for field in _FIELDS + ('peak_fraction', 'device_kind', 'dtype'):
    assert field in result, field
