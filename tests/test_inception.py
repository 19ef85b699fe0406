"""The Flax FID Inception reproduces pytorch-fid's network, input handling and statistics.

``tests/data/fid_inception_tiny.npz`` holds pytorch-fid's outputs (pool3, logits, each block's
spatial means, the 299 x 299 resize) for seeded random weights that ``inception_fixture`` rebuilds
(see tests/data/README.md), so every block type is checked against torch's numbers without torch.
"""

import os

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import pytest

from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_metrics
from ddgan_jax.evaluation import inception_weights
from tests import inception_fixture
from tests.tolerances import assert_trees_close

FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'fid_inception_tiny.npz')


@pytest.fixture(name='variables', scope='module')
def fixture_variables():
  return inception_weights.from_torch_state_dict(inception_fixture.random_state_dict())


@pytest.fixture(name='expected', scope='module')
def fixture_expected():
  with np.load(FIXTURE) as data:
    return {k: data[k] for k in data.files}


def _outputs(variables, images):
  """pool3, logits and the spatial means of each block, for uint8 images (one size per entry)."""
  model = inception.InceptionV3()
  is_block = lambda mdl, method: method == '__call__' and mdl.name in inception_fixture.BLOCKS
  x = jnp.concatenate([inception.preprocess(jnp.asarray(i)) for i in images])
  (pool3, logits), state = jax.jit(
      lambda v, x: model.apply(v, x, capture_intermediates=is_block))(variables, x)
  means = {f'mean/{name}': jnp.mean(state['intermediates'][name]['__call__'][0], axis=(1, 2))
           for name in inception_fixture.BLOCKS}
  return jax.device_get({'pool3': pool3, 'logits': logits, **means})


@pytest.mark.parametrize('name', ['32', '256', '512x384'])
def test_resize_matches_torch_interpolate(expected, name):
  if name == '512x384':
    images = inception_fixture.shrink_image()
  else:
    images = inception_fixture.fixture_images()[f'images{name}'][:1, :, :, :1]
  ours = inception.resize_bilinear(jnp.asarray(images, jnp.float32) / 255.0, 299, 299)
  assert_trees_close(np.asarray(ours)[0, :, :, 0], expected[f'resized{name}'], 1e-6, 'resize')


def test_resize_matches_torch_formula_when_shrinking():
  # Downsampling 7 -> 3 (scale 7/3): source x = (i + 0.5) 7/3 - 0.5 = 0.667, 3, 5.333.
  x = jnp.arange(7, dtype=jnp.float32)[None, None, :, None] * jnp.ones((1, 2, 7, 1))
  out = inception.resize_bilinear(x, 2, 3)
  np.testing.assert_allclose(np.asarray(out)[0, 0, :, 0], [2 / 3, 3.0, 16 / 3], rtol=1e-6)


def test_network_matches_pytorch_fid(variables, expected):
  images = inception_fixture.fixture_images()
  ours = _outputs(variables, [images['images32'], images['images256']])
  for index, size in ((slice(0, 2), 32), (slice(2, 4), 256)):
    theirs = {k.split('/', 1)[1]: v for k, v in expected.items() if k.startswith(f'{size}/')}
    assert_trees_close({k: v[index] for k, v in ours.items()}, theirs, 1e-4, f'{size}x{size}')
  torch_pool3 = np.concatenate([expected['32/pool3'], expected['256/pool3']])
  assert_trees_close(inception_metrics.feature_statistics(ours['pool3']),
                     inception_metrics.feature_statistics(torch_pool3), 1e-5, 'mu, sigma')


def test_grey_images_are_repeated_to_rgb():
  grey = np.random.default_rng(0).integers(0, 256, (2, 9, 11, 1), dtype=np.uint8)
  np.testing.assert_array_equal(inception.preprocess(jnp.asarray(grey)),
                                inception.preprocess(jnp.asarray(np.repeat(grey, 3, axis=-1))))
  with pytest.raises(ValueError, match='C = 1 or 3'):
    inception.preprocess(jnp.zeros((2, 9, 11, 2), jnp.uint8))


def test_features_equal_on_one_and_eight_devices(variables):
  images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  one = inception.make_features_fn(variables, Mesh(np.asarray(jax.devices()[:1]), ('data',)),
                                   batch_size=8)(images)
  eight = inception.make_features_fn(variables, Mesh(np.asarray(jax.devices()), ('data',)),
                                     batch_size=8)(images)
  assert one[0].shape == (5, 2048) and one[1].shape == (5, 1008)
  assert one[0].dtype == np.float32
  # Each device convolves a batch of 1 instead of 8, which may round differently.
  assert_trees_close(eight, one, 1e-5, 'features')


def test_bfloat16_features_are_float32_and_close(variables):
  images = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  mesh = Mesh(np.asarray(jax.devices()), ('data',))
  full = inception.make_features_fn(variables, mesh, 'float32', batch_size=8)(images)
  half = inception.make_features_fn(variables, mesh, 'bfloat16', batch_size=8)(images)
  assert half[0].dtype == np.float32 and half[1].dtype == np.float32
  assert_trees_close(half, full, 0.05, 'bfloat16 vs float32')
  with pytest.raises(ValueError, match='float16'):
    inception.make_features_fn(variables, mesh, 'float16')


def test_weights_file_round_trip_and_named_errors(variables, tmp_path):
  path = str(tmp_path / 'w.npz')
  inception_weights.save(variables, path)
  loaded = inception_weights.load(path)
  assert_trees_close(loaded, variables, 0.0, 'weights')
  flat = {'/'.join(k): v for k, v in flax.traverse_util.flatten_dict(variables).items()}
  del flat['params/Mixed_6a/branch3x3/conv/kernel']
  flat['params/Mixed_6a/extra'] = np.zeros(3, np.float32)
  flat['params/fc/bias'] = np.zeros(1000, np.float32)
  np.savez(path, **flat)
  with pytest.raises(ValueError) as error:
    inception_weights.load(path)
  for name in ('missing entries: params/Mixed_6a/branch3x3/conv/kernel',
               'misshapen entries: params/fc/bias (1000,) (expected (1008,))',
               'extra entries: params/Mixed_6a/extra', 'ddgan_jax.fid convert'):
    assert name in str(error.value)
