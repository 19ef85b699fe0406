"""The ``python -m ddgan_jax.fid`` command line and the weights lookup, without torch."""

import os
import subprocess
import sys
import time

import flax
import numpy as np
import pytest

from ddgan_jax import fid
from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_metrics
from ddgan_jax.evaluation import inception_weights

UNREACHABLE = 'http://127.0.0.1:9/pt_inception-2015-12-05-6726825d.pth'


def _zero_state_dict():
  flat = flax.traverse_util.flatten_dict(inception.variables_template())
  return {inception_weights.torch_key(p): inception_weights.torch_layout(
      np.zeros(s.shape, np.float32)) for p, s in flat.items()}


def test_conversion_names_missing_extra_and_misshapen_keys():
  state = _zero_state_dict()
  state['Mixed_5b.branch_pool.bn.num_batches_tracked'] = np.zeros((), np.int64)
  variables = inception_weights.from_torch_state_dict(state)
  assert variables['params']['Mixed_5b']['branch5x5_2']['conv']['kernel'].shape == (5, 5, 48, 64)
  assert variables['params']['fc']['kernel'].shape == (2048, 1008)
  del state['Mixed_7c.branch_pool.bn.running_var']
  state['AuxLogits.fc.weight'] = np.zeros((1000, 768), np.float32)
  state['fc.weight'] = np.zeros((1000, 2048), np.float32)
  with pytest.raises(ValueError) as error:
    inception_weights.from_torch_state_dict(state)
  message = str(error.value)
  assert 'missing keys: Mixed_7c.branch_pool.bn.running_var' in message
  assert 'misshapen keys: fc.weight (1000, 2048) (expected (1008, 2048))' in message
  assert 'extra keys: AuxLogits.fc.weight' in message
  assert 'num_batches_tracked' not in message


def test_no_weights_and_no_network_fails_at_once_naming_file_url_and_command(tmp_path):
  start = time.perf_counter()
  with pytest.raises(inception_weights.WeightsNotFoundError) as error:
    inception_weights.locate(None, str(tmp_path), UNREACHABLE)
  assert time.perf_counter() - start < 5
  message = str(error.value)
  for part in (inception_weights.TORCH_FILE, UNREACHABLE, 'python -m ddgan_jax.fid convert',
               str(tmp_path / inception_weights.CONVERTED_FILE)):
    assert part in message
  with pytest.raises(inception_weights.WeightsNotFoundError, match='No Inception weights file'):
    inception_weights.locate(str(tmp_path / 'absent.npz'), str(tmp_path), UNREACHABLE)


def test_cached_converted_weights_are_found(tmp_path):
  (tmp_path / inception_weights.CONVERTED_FILE).write_bytes(b'')
  found = inception_weights.locate(None, str(tmp_path), UNREACHABLE)
  assert found == tmp_path / inception_weights.CONVERTED_FILE


def test_cli_without_weights_fails_in_seconds(tmp_path):
  images = tmp_path / 'images.npz'
  np.savez(images, images=np.zeros((4, 8, 8, 1), np.uint8))
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, '-m', 'ddgan_jax.fid', 'stats', f'--images={images}',
       f'--out={tmp_path / "s.npz"}', f'--cache_dir={tmp_path}', f'--weights_url={UNREACHABLE}'],
      capture_output=True, text=True, check=False, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode != 0
  assert 'python -m ddgan_jax.fid convert' in result.stderr
  assert UNREACHABLE in result.stderr
  assert time.perf_counter() - start < 60


def test_image_sources_npz_and_folder(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
  np.savez(tmp_path / 'rgb.npz', images=rgb)
  np.testing.assert_array_equal(fid.load_images(str(tmp_path / 'rgb.npz')), rgb)
  folder = tmp_path / 'pngs'
  folder.mkdir()
  for i, image in enumerate(rgb):
    fid.Image.fromarray(image).save(folder / f'{i}.png')
  fid.Image.fromarray(rgb[0, :, :, 0]).save(folder / '3.png')  # Grey, read as RGB.
  (folder / 'notes.txt').write_text('not an image')
  loaded = fid.load_images(str(folder))
  np.testing.assert_array_equal(loaded[:3], rgb)
  np.testing.assert_array_equal(loaded[3], np.repeat(rgb[0, :, :, :1], 3, axis=-1))
  fid.Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / '4.png')
  with pytest.raises(ValueError, match='differ in size'):
    fid.load_images(str(folder))
  np.savez(tmp_path / 'bad.npz', images=rgb.astype(np.float32))
  with pytest.raises(ValueError, match='must be uint8'):
    fid.load_images(str(tmp_path / 'bad.npz'))
  with pytest.raises(ValueError, match='neither a folder'):
    fid.load_images(str(tmp_path / 'absent'))


def test_distance_between_statistics_files(tmp_path, capsys):
  rng = np.random.default_rng(0)
  paths = []
  for shift in (0.0, 1.0):
    mu, sigma = inception_metrics.feature_statistics(rng.standard_normal((50, 4)) + shift)
    paths.append(str(tmp_path / f'{shift}.npz'))
    fid.write_statistics(paths[-1], mu, sigma)
  fid.main(['fid', 'distance', *paths])
  expected = inception_metrics.frechet_distance(*fid.read_statistics(paths[0]),
                                                *fid.read_statistics(paths[1]))
  assert capsys.readouterr().out == f'FID: {expected:.6f}\n'
  assert expected > 3.0
