"""Live parity with pytorch-fid (the ``fid`` extra: torch, torchvision and pytorch-fid).

pytorch-fid's network gets seeded random weights (every tensor random, batch-norm statistics
included), is saved as a ``.pth``, converted and scored with the ``python -m ddgan_jax.fid``
command line, and compared with pytorch-fid on the same uint8 images at 32 x 32 and 256 x 256.
"""

import subprocess
import sys

import numpy as np
import pytest

from ddgan_jax import fid
from ddgan_jax.evaluation import inception_metrics
from tests import inception_fixture
from tests.tolerances import assert_trees_close

torch = pytest.importorskip('torch')
try:
  from pytorch_fid import fid_score  # pylint: disable=g-import-not-at-top
except Exception as e:  # pylint: disable=broad-except
  # torchvision may be absent, or built for another torch (it then fails with a RuntimeError).
  pytest.skip(f'needs pytorch-fid and a torchvision that works with this torch ({e})',
              allow_module_level=True)


def _cli(*args):
  result = subprocess.run([sys.executable, '-m', 'ddgan_jax.fid', *args], capture_output=True,
                          text=True, check=False, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_converted_weights_match_pytorch_fid(tmp_path):
  state = inception_fixture.random_state_dict(inception_fixture.SEED + 1)
  full, model = inception_fixture.pytorch_fid_networks(state)
  checkpoint = tmp_path / 'pt_inception.pth'
  torch.save(full.state_dict(), checkpoint)
  assert any(k.endswith('num_batches_tracked') for k in full.state_dict())
  weights = str(tmp_path / 'fid_inception.npz')
  _cli('convert', f'--checkpoint={checkpoint}', f'--out={weights}')

  features_fn = fid.make_features_fn(weights, str(tmp_path / 'cache'), 'float32', 2)
  for name, images in inception_fixture.fixture_images().items():
    theirs = inception_fixture.torch_outputs(model, state, images)
    pool3, logits = features_fn(images)
    assert_trees_close((pool3, logits), (theirs['pool3'], theirs['logits']), 1e-4, name)

  images = inception_fixture.fixture_images()['images32']
  images = np.concatenate([images, images[:, ::-1], images[:, :, ::-1]])
  source = tmp_path / 'images.npz'
  np.savez(source, images=images)
  stats = tmp_path / 'stats.npz'
  _cli('stats', f'--inception={weights}', f'--images={source}', f'--out={stats}',
       '--batch_size=8')
  expected = inception_metrics.feature_statistics(
      inception_fixture.torch_outputs(model, state, images)['pool3'])
  assert_trees_close(fid.read_statistics(str(stats)), expected, 1e-5, 'mu, sigma')


def test_frechet_distance_matches_pytorch_fid():
  rng = np.random.default_rng(0)
  for dim, num in ((16, 100), (64, 40)):
    stats = []
    for shift in (0.0, 0.3):
      features = rng.standard_normal((num, dim)) @ rng.standard_normal((dim, dim)) + shift
      stats += inception_metrics.feature_statistics(features)
    expected = fid_score.calculate_frechet_distance(*stats)
    assert inception_metrics.frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)
