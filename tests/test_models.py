"""Generator and discriminator: parameter counts, initial behaviour, every option, every config."""

import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ddgan_jax import models


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _config(name):
  return importlib.import_module(f'configs.{name}').get_config()


def _inputs(config, batch=2, seed=0):
  m = config.model
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], (batch, m.image_size, m.image_size, m.num_channels))
  t = jnp.arange(batch, dtype=jnp.int32) % config.diffusion.num_timesteps
  z = jax.random.normal(keys[1], (batch, m.nz))
  return x, t, z


def _init(module, *args):
  return jax.jit(module.init)(jax.random.key(0), *args)


def _random_variables(module, *args):
  """Variables of the right structure filled with seeded noise (cheaper than a real init)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32) * 0.05), shapes)


def _perturb(variables, scale=0.05):
  rng = np.random.default_rng(3)
  return jax.tree_util.tree_map(
      lambda p: p + jnp.asarray(rng.standard_normal(p.shape).astype(np.float32) * scale), variables)


@pytest.fixture(name='tiny', scope='module')
def fixture_tiny():
  """A tiny default generator, its initial variables and inputs, shared by several tests."""
  config = _tiny_config()
  x, t, z = _inputs(config)
  g = models.build_generator(config)
  return config, g, _init(g, x, t, z), (x, t, z)


def _tiny_config(**overrides):
  config = default.get_config()
  m = config.model
  m.image_size, m.nf, m.ch_mult, m.num_res_blocks = 16, 16, (1, 2), 1
  m.attn_resolutions, m.n_mlp, m.z_emb_dim, m.nz = (8,), 1, 16, 8
  m.ngf, m.t_emb_dim = 8, 16
  for key, value in overrides.items():
    m[key] = value
  return config


@pytest.mark.parametrize('name, g_params, d_params, mapping', [
    ('cifar10', 48_432_515, 12_741_633, 289_024),
    ('celeba_256', 39_726_979, 27_737_217, 223_232),
    ('lsun_church', 39_726_979, 27_737_217, 223_232),
])
def test_parameter_counts_equal_the_official_ones(name, g_params, d_params, mapping):
  config = _config(name)
  x, t, z = _inputs(config, batch=1)
  g = jax.eval_shape(models.build_generator(config).init, jax.random.key(0), x, t, z)
  d = jax.eval_shape(models.build_discriminator(config).init, jax.random.key(0), x, t, x)
  assert _count(g['params']) == g_params
  assert _count(g['params']['z_transform']) == mapping
  assert _count(d['params']) == d_params


# configs/saved.py loads a workdir's saved config and needs one (tests/test_sampling.py uses it).
@pytest.mark.parametrize('path', sorted(p for p in glob.glob(os.path.join(
    os.path.dirname(__file__), '..', 'configs', '*.py')) if os.path.basename(p) != 'saved.py'))
def test_every_config_builds_networks_of_the_right_shapes(path):
  name = os.path.splitext(os.path.basename(path))[0]
  config = _config(name)
  models.check_image_size(config)
  m = config.model
  if m.generator == 'mlp':
    x = jnp.zeros((3, m.num_channels))
  else:
    x = jnp.zeros((3, m.image_size, m.image_size, m.num_channels))
  t = jnp.zeros((3,), jnp.int32)
  z = jnp.zeros((3, m.nz))
  g = models.build_generator(config)
  d = models.build_discriminator(config)
  g_vars = jax.eval_shape(g.init, jax.random.key(0), x, t, z)
  d_vars = jax.eval_shape(d.init, jax.random.key(0), x, t, x)
  assert jax.eval_shape(g.apply, g_vars, x, t, z).shape == x.shape
  assert jax.eval_shape(d.apply, d_vars, x, t, x).shape == (3, 1)


def test_generator_output_is_near_zero_at_initialisation(tiny):
  _, g, variables, (x, t, z) = tiny
  apply = g.apply
  out = apply(variables, x, t, z)
  assert out.shape == x.shape and out.dtype == jnp.float32
  # The last conv starts at scale 1e-10: weights ~1e-6 over ~150 unit-size inputs.
  assert 0 < float(jnp.max(jnp.abs(out))) < 1e-4
  last = max(k for k in variables['params'] if k.endswith('conv_out'))
  params = dict(variables['params'])
  params[last] = dict(params[last], kernel=jax.random.uniform(
      jax.random.key(1), params[last]['kernel'].shape, minval=-0.1, maxval=0.1))
  assert float(jnp.max(jnp.abs(apply({'params': params}, x, t, z)))) > 0.05


def test_tanh_bounds_the_output_and_can_be_turned_off(tiny):
  _, g, variables, (x, t, z) = tiny
  big = _perturb(variables, scale=3.0)
  out = np.asarray(g.apply(big, x, t, z))
  assert np.all(np.abs(out) <= 1.0) and np.max(np.abs(out)) > 0.99
  raw_g = models.build_generator(_tiny_config(use_tanh=False))
  raw = np.asarray(raw_g.apply(big, x, t, z))
  assert np.max(np.abs(raw)) > 1.0
  np.testing.assert_allclose(np.tanh(raw), out, atol=1e-5)


@pytest.mark.parametrize('overrides', [
    dict(resblock_type='biggan', progressive='none', progressive_input='residual'),
    dict(resblock_type='biggan_oneadagn'),
    dict(resblock_type='ddpm', fir=True, resamp_with_conv=True),
    dict(resblock_type='ddpm', fir=False, resamp_with_conv=True),
    dict(resblock_type='ddpm', fir=False, resamp_with_conv=False),
    dict(resblock_type='ddpm', fir=True, resamp_with_conv=False, progressive='output_skip'),
    dict(progressive='output_skip'),
    dict(progressive='output_skip', fir=False),
    dict(progressive='residual'),
    dict(progressive='residual', fir=False, progressive_input='none'),
    dict(progressive_input='input_skip', progressive_combine='cat'),
    dict(progressive_input='input_skip', progressive_combine='sum', fir=False),
    dict(progressive_input='residual', fir=False),
    dict(embedding_type='fourier'),
    dict(conditional=False),
    dict(skip_rescale=False, progressive='residual'),
    dict(centered=False),
    dict(ch_mult=(1, 2, 2), attn_resolutions=(4, 8), num_res_blocks=2),
])
def test_every_generator_option_builds_and_runs(overrides):
  config = _tiny_config(**overrides)
  x, t, z = _inputs(config)
  g = models.build_generator(config)
  variables = _random_variables(g, x, t, z)
  out = g.apply(variables, x, t, z)
  assert out.shape == x.shape
  assert np.all(np.isfinite(np.asarray(out)))
  assert float(jnp.std(out)) > 1e-3
  if not config.model.centered:
    assert float(jnp.min(out)) >= 0.0
  if not config.model.conditional:
    assert not any('temb' in k for k in variables['params'])


def test_dropout_is_active_only_in_training():
  config = _tiny_config(dropout=0.5)
  x, t, z = _inputs(config)
  g = models.build_generator(config)
  variables = _random_variables(g, x, t, z)
  apply = g.apply
  eval_a = apply(variables, x, t, z)
  np.testing.assert_array_equal(eval_a, apply(variables, x, t, z))
  train = apply(variables, x, t, z, train=True, rngs={'dropout': jax.random.key(5)})
  assert not np.allclose(train, eval_a)


@pytest.mark.parametrize('overrides, match', [
    (dict(resblock_type='resnet'), 'resblock_type'),
    (dict(progressive='skip'), 'progressive'),
    (dict(progressive_combine='max', progressive_input='input_skip'), 'progressive_combine'),
    (dict(embedding_type='learned'), 'embedding_type'),
])
def test_bad_generator_options_are_named(overrides, match):
  config = _tiny_config(**overrides)
  x, t, z = _inputs(config)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(models.build_generator(config).init, jax.random.key(0), x, t, z)


def test_wrong_latent_size_is_reported():
  config = _tiny_config()
  x, t, _ = _inputs(config)
  with pytest.raises(ValueError, match='nz'):
    jax.eval_shape(models.build_generator(config).init, jax.random.key(0), x, t, jnp.zeros((2, 5)))


@pytest.mark.parametrize('size, image_size', [('small', 16), ('large', 64)])
def test_discriminator_runs_and_depends_on_every_input(size, image_size):
  config = _tiny_config(discriminator=size, image_size=image_size)
  x, t, _ = _inputs(config, batch=4)
  x2 = jnp.flip(x, axis=0)
  d = models.build_discriminator(config)
  variables = _random_variables(d, x, t, x2)
  apply = jax.jit(d.apply)
  out = apply(variables, x, t, x2)
  assert out.shape == (4, 1) and out.dtype == jnp.float32
  assert not np.allclose(out, apply(variables, x, (t + 1) % 4, x2))
  assert not np.allclose(out, apply(variables, x * 0.5, t, x2))
  assert not np.allclose(out, apply(variables, x, t, x2 * 0.5))


def test_bfloat16_compute_keeps_float32_params(tiny):
  config, g32, variables, (x, t, z) = tiny
  variables = _perturb(variables)
  config = _tiny_config()
  config.training.dtype = 'bfloat16'
  g16 = models.build_generator(config)
  shapes = jax.eval_shape(g16.init, jax.random.key(0), x, t, z)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes))
  out16 = jax.jit(g16.apply)(variables, x, t, z)
  out32 = jax.jit(g32.apply)(variables, x, t, z)
  assert out16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1
  assert not np.array_equal(out16, out32)


def test_unknown_names_and_sizes_are_rejected():
  config = _tiny_config()
  config.training.dtype = 'float16'
  with pytest.raises(ValueError, match='dtype'):
    models.compute_dtype(config)
  config = _tiny_config(generator='unet')
  with pytest.raises(ValueError, match='generator'):
    models.build_generator(config)
  config = _tiny_config(discriminator='huge')
  with pytest.raises(ValueError, match='discriminator'):
    models.build_discriminator(config)
  config = _tiny_config(image_size=20)
  with pytest.raises(ValueError, match='multiple of 8'):
    models.check_image_size(config)
