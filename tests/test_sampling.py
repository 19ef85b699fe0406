"""Sampling as a product: streaming shards, any checkpoint, the saved config, the Python API."""

import json
import pathlib
import tracemalloc
from unittest import mock

import jax
import numpy as np
from PIL import Image
import pytest

import ddgan_jax
from ddgan_jax import checkpoints
from ddgan_jax import evaluation
from ddgan_jax import run_config
from ddgan_jax import sample_files
from ddgan_jax import sampling
from ddgan_jax import train_state as train_state_lib
from tests import runs
from tests.configs import tiny
from tests.configs import tiny_digits

def _read_dir(directory: pathlib.Path) -> dict[str, np.ndarray]:
  out = {}
  for path in sorted(directory.iterdir()):
    with np.load(path) as f:
      (key,) = f.files
      out[path.name] = f[key]
  return out


def _image_config():
  """16x16x3 images, one resolution level, T = 1: quick to compile and to sample."""
  config = tiny_digits.get_config()
  config.model.image_size = 16
  config.model.num_channels = 3
  config.model.nf = 8
  config.model.ch_mult = (1,)
  config.model.attn_resolutions = ()
  config.diffusion.num_timesteps = 1
  config.sampling.batch_size = 400
  config.sampling.num_images = 12
  return config


@pytest.fixture(scope='module')
def image_run(tmp_path_factory):
  """A workdir of ``_image_config`` with a step-0 checkpoint; its samples are far from flat grey."""
  workdir = tmp_path_factory.mktemp('image_run')
  runs.write_run(workdir, _image_config(), [0])
  return workdir


def test_streaming_20000_images_keeps_host_memory_flat(image_run):
  config = _image_config()
  config.sampling.num_images = 20_000
  config.sampling.shard_size = 3000
  config.sampling.grid_images = 16
  tracemalloc.start()
  try:
    out_dir = sample_files.sample_and_save(config, str(image_run))
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  float32_copy = 20_000 * 16 * 16 * 3 * 4  # 61 MB.
  # A batch in flight plus one shard: 10 to 17 MB measured, depending on what ran before in the
  # process. Half a float32 copy of all the images bounds it; keeping them all would break it.
  assert peak < float32_copy / 2, f'peak traced host memory {peak / 1e6:.1f} MB'
  names = sorted(p.name for p in out_dir.iterdir())
  bounds = [0, 3000, 6000, 9000, 12000, 15000, 18000, 20000]
  assert names == [f'images_{a:08d}_{b:08d}.npz' for a, b in zip(bounds, bounds[1:])]
  with np.load(out_dir / names[-1]) as f:
    assert f['images'].shape == (2000, 16, 16, 3) and f['images'].dtype == np.uint8
  grid = np.asarray(Image.open(out_dir.parent / f'{out_dir.name}.png'))
  assert grid.shape == (4 * 18 + 2, 4 * 18 + 2, 3)  # 16 tiles of 16 px with 2 px gaps.


def test_cli_from_the_saved_config_alone_equals_the_api_on_1_and_8_devices(image_run):
  proc = runs.run_cli([f'--workdir={image_run}', '--mode=sample'], devices=8, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out_dir = image_run / 'samples' / 'step0_seed0_n12_batch400'
  eight = _read_dir(out_dir)
  assert list(eight) == ['images_00000000_00000012.npz']
  cli = eight['images_00000000_00000012.npz']
  assert cli.shape == (12, 16, 16, 3) and cli.std() > 20

  sampler = ddgan_jax.load_sampler(str(image_run))
  assert sampler.step == 0
  np.testing.assert_array_equal(sampler.sample(12, seed=0), cli)
  floats = sampler.sample_float(12, seed=0)
  assert floats.dtype == np.float32 and floats.shape == cli.shape
  np.testing.assert_array_equal(sampling.to_uint8(floats, True), cli)
  assert not np.array_equal(sampler.sample(12, seed=1), cli)

  # One device, with the saved config loaded by configs/saved.py and a field overridden.
  proc = runs.run_cli([f'--workdir={image_run}', '--mode=sample',
                       f'--config=configs/saved.py:{image_run}', '--config.sampling.shard_size=5'],
                      devices=1, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  one = _read_dir(out_dir)
  assert list(one) == ['images_00000000_00000005.npz', 'images_00000005_00000010.npz',
                       'images_00000010_00000012.npz']
  assert np.abs(np.concatenate(list(one.values())).astype(int) - cli).max() <= 1


def test_png_format_writes_one_file_per_image_equal_to_the_api(image_run):
  config = run_config.load(str(image_run))
  config.sampling.format = 'png'
  config.sampling.num_images = 5
  out_dir = sample_files.sample_and_save(config, str(image_run))
  assert sorted(p.name for p in out_dir.iterdir()) == [f'{i:08d}.png' for i in range(5)]
  images = np.stack([np.asarray(Image.open(out_dir / f'{i:08d}.png')) for i in range(5)])
  np.testing.assert_array_equal(images, ddgan_jax.load_sampler(str(image_run)).sample(5))


def test_a_contradicting_config_fails_naming_the_fields(image_run):
  saved = run_config.load(str(image_run))
  other = saved.copy_and_resolve_references()
  other.sampling.num_images = 50_000
  other.eval.batch_size = 3
  assert run_config.resolve(other, str(image_run)) is other  # Non-architecture fields may differ.
  other.model.nf = 4
  other.diffusion.num_timesteps = 2
  with pytest.raises(ValueError) as error:
    run_config.resolve(other, str(image_run))
  message = str(error.value)
  assert 'model.nf: 4 vs saved 8' in message and 'diffusion.num_timesteps: 2 vs saved 1' in message
  assert 'samples only at T' in message and 'model.nz' not in message
  with pytest.raises(ValueError, match='holds no config.json'):
    run_config.resolve(None, str(image_run / 'missing'))
  with pytest.raises(ValueError, match='model.nf: 4 vs saved 8'):
    run_config.record(other, str(image_run), has_checkpoints=True)  # A resumed training.


def test_a_config_saved_before_fields_existed_takes_their_defaults(tmp_path):
  config = tiny.get_config()
  config.eval.num_samples = 32
  runs.write_run(tmp_path, config, [1])
  path = tmp_path / run_config.CONFIG_FILE
  tree = json.loads(path.read_text())
  for section, field in (('training', 'eval_every'), ('eval', 'num_samples_train'),
                         ('eval', 'step'), ('eval', 'image_format')):
    del tree[section][field]
  path.write_text(json.dumps(tree))
  with mock.patch.object(run_config.logging, 'info') as info:
    old = run_config.resolve(None, str(tmp_path))  # As every mode of ddgan_jax.main reads it.
  (line,) = [c.args[0] % c.args[1:] for c in info.call_args_list]
  assert ('config.json predates the config fields training.eval_every, eval.num_samples_train, '
          'eval.step, eval.image_format; they take the defaults of') in line
  assert (old.training.eval_every, old.eval.num_samples_train, old.eval.step,
          old.eval.image_format) == (0, 1000, -1, 'png')
  assert old.eval.num_samples == 32  # Saved fields keep their values.
  out_dir = sample_files.sample_and_save(old, str(tmp_path))
  written = _read_dir(out_dir)['samples_00000000_00000040.npz']
  np.testing.assert_array_equal(
      written, ddgan_jax.load_sampler(str(tmp_path)).sample_float(40, seed=0))
  metrics = evaluation.evaluate(old, str(tmp_path))
  assert metrics['step'] == 1 and metrics['num_samples'] == 32

  tree['training']['eval_every'] = 'often'
  path.write_text(json.dumps(tree))
  with pytest.raises(ValueError) as error:
    run_config.load(str(tmp_path))
  assert f"{path}: training.eval_every is 'often' (str), where" in str(error.value)
  tree['training']['eval_every'], tree['eval'] = 0, 3
  path.write_text(json.dumps(tree))
  with pytest.raises(ValueError, match=r'config.json: eval is 3 \(int\), where'):
    run_config.load(str(tmp_path))
  # A run that failed before its first checkpoint restarts with its new config.
  config.seed = 5
  run_config.record(config, str(tmp_path / 'restart'), has_checkpoints=False)
  config.seed = 6
  run_config.record(config, str(tmp_path / 'restart'), has_checkpoints=False)
  assert run_config.load(str(tmp_path / 'restart')).seed == 6


def test_chosen_step_restores_it_and_keep_every_steps_keeps_its_multiples(tmp_path):
  config = tiny.get_config()
  config.checkpoint.every_steps = 1
  config.checkpoint.max_to_keep = 1
  config.checkpoint.keep_every_steps = 2
  saved = runs.write_run(tmp_path, config, [1, 2, 3, 4, 5])
  assert sorted(checkpoints.from_config(str(tmp_path), config).manager.all_steps()) == [2, 4, 5]
  state = sampling.restore_state(config, str(tmp_path), sampling.make_mesh(), 2)
  assert int(state.step) == 2
  jax.tree.map(np.testing.assert_array_equal, state.ema_params, saved[2])
  config.sampling.step = 4
  out_dir = sample_files.sample_and_save(config, str(tmp_path))
  assert out_dir.name == 'step4_seed0_n40_batch16'
  written = _read_dir(out_dir)['samples_00000000_00000040.npz']
  assert written.shape == (40, 2) and written.dtype == np.float32
  np.testing.assert_array_equal(
      written, ddgan_jax.load_sampler(str(tmp_path), step=4).sample_float(40, seed=0))
  with pytest.raises(FileNotFoundError, match=r'holds steps \[2, 4, 5\]'):
    ddgan_jax.load_sampler(str(tmp_path), step=3)
  config.eval.step = 2
  config.eval.num_samples = 32
  assert evaluation.evaluate(config, str(tmp_path))['step'] == 2
  config.sampling.format = 'png'
  with pytest.raises(ValueError, match='needs images'):
    sample_files.sample_and_save(config, str(tmp_path))
  config.checkpoint.keep_every_steps = 3
  config.checkpoint.every_steps = 2
  with pytest.raises(ValueError, match='keep_every_steps=3 must be 0'):
    train_state_lib.check_config(config)
