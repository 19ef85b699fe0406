"""Checkpoint conversion: every official key, exact outputs of official networks, clear errors.

``tests/data/official_tiny.npz`` holds state dicts, inputs and outputs of small official PyTorch
networks (NVlabs/denoising-diffusion-gan at 6818ded, float32, eval mode, parameters perturbed so no
layer is zero): four generator variants and both discriminator layouts (see tests/data/README.md).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import celeba_256
from configs import cifar10
from configs import default
from ddgan_jax import convert
from ddgan_jax import models

REFERENCE = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference',
                         'official_state_dicts.json')
TINY = os.path.join(os.path.dirname(__file__), 'data', 'official_tiny.npz')

GENERATOR_VARIANTS = {
    'default': {},
    'oneadagn_outskip_inskipcat': dict(resblock_type='biggan_oneadagn', progressive='output_skip',
                                       progressive_input='input_skip', progressive_combine='cat'),
    'ddpm_fir_noconv': dict(resblock_type='ddpm', resamp_with_conv=False,
                            progressive_input='input_skip'),
    'biggan_nofir_noskiprescale': dict(fir=False, skip_rescale=False, progressive_input='none'),
}


def _tiny_config(**overrides):
  config = default.get_config()
  m = config.model
  m.image_size, m.nf, m.ch_mult, m.num_res_blocks = 16, 8, (1, 2, 2), 1
  m.attn_resolutions, m.n_mlp, m.nz, m.z_emb_dim, m.t_emb_dim = (8,), 2, 8, 16, 16
  for key, value in overrides.items():
    m[key] = value
  return config


@pytest.fixture(name='tiny', scope='module')
def fixture_tiny():
  data = np.load(TINY)
  groups = {}
  for key in data.files:
    group, name = key.split('/', 1)
    groups.setdefault(group, {})[name] = data[key]
  return groups


def _split(group):
  state = {k: v for k, v in group.items() if not k.startswith('__')}
  return state, {k: v for k, v in group.items() if k.startswith('__')}


def _nhwc(x):
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _rel_err(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.mark.parametrize('variant', sorted(GENERATOR_VARIANTS))
def test_generator_reproduces_official_outputs(tiny, variant):
  config = _tiny_config(**GENERATOR_VARIANTS[variant])
  state, io = _split(tiny[f'G_{variant}'])
  variables = convert.generator_params_from_torch(state, config)
  out = models.build_generator(config).apply(
      variables, _nhwc(io['__x']), jnp.asarray(io['__t'], jnp.int32), jnp.asarray(io['__z']))
  assert _rel_err(np.transpose(np.asarray(out), (0, 3, 1, 2)), io['__out']) < 1e-4


@pytest.mark.parametrize('size, image_size, ngf', [('small', 16, 4), ('large', 64, 2)])
def test_discriminator_reproduces_official_outputs(tiny, size, image_size, ngf):
  config = _tiny_config(discriminator=size, image_size=image_size, ngf=ngf)
  state, io = _split(tiny[f'D_{size}'])
  variables = convert.discriminator_params_from_torch(state, config)
  out = models.build_discriminator(config).apply(
      variables, _nhwc(io['__x_t']), jnp.asarray(io['__t'], jnp.int32), _nhwc(io['__x_tp1']))
  assert out.shape == (4, 1)
  assert _rel_err(out, io['__out']) < 1e-4


def _reference_state_dict(name, part, prefix='module.'):
  with open(REFERENCE, encoding='utf-8') as f:
    entries = json.load(f)[name][part]
  rng = np.random.default_rng(0)
  return {prefix + k: rng.standard_normal(shape).astype(np.float32) for k, shape in entries}


@pytest.mark.skipif(not os.path.exists(REFERENCE), reason='needs ../shared/reference')
@pytest.mark.parametrize('name, module', [('cifar10', cifar10), ('celeba_256', celeba_256)])
def test_every_official_key_is_converted(name, module):
  config = module.get_config()
  for part, fn in (('generator', convert.generator_params_from_torch),
                   ('discriminator', convert.discriminator_params_from_torch)):
    state = _reference_state_dict(name, part)
    variables = fn(state, config)
    leaves = jax.tree_util.tree_leaves(variables)
    assert sum(v.size for v in leaves) == sum(v.size for v in state.values())
  # Spot-check the layouts: a conv (O, I, kh, kw) -> (kh, kw, I, O), a linear (out, in) -> (in, out).
  state = _reference_state_dict(name, 'generator', prefix='')
  params = convert.generator_params_from_torch(state, config)['params']
  np.testing.assert_array_equal(params['m02_conv_in']['kernel'],
                                np.transpose(state['all_modules.2.weight'], (2, 3, 1, 0)))
  np.testing.assert_array_equal(params['z_transform']['Dense_0']['kernel'],
                                state['z_transform.1.weight'].T)


def test_missing_extra_and_misshapen_keys_are_named(tiny):
  config = _tiny_config()
  state, _ = _split(tiny['G_default'])
  broken = dict(state)
  del broken['all_modules.3.Conv_0.weight']
  with pytest.raises(ValueError, match=r'missing official keys: all_modules\.3\.Conv_0\.weight'):
    convert.generator_params_from_torch(broken, config)
  extra = dict(state, **{'all_modules.99.weight': np.zeros(3)})
  with pytest.raises(ValueError, match=r'no Flax parameter: all_modules\.99\.weight'):
    convert.generator_params_from_torch(extra, config)
  wrong = dict(state, **{'all_modules.0.bias': np.zeros(7)})
  with pytest.raises(ValueError, match=r'shape mismatches: all_modules\.0\.bias'):
    convert.generator_params_from_torch(wrong, config)
  with pytest.raises(ValueError, match='--config'):
    convert.generator_params_from_torch(state, _tiny_config(nf=16))


def test_module_prefix_is_optional_but_not_twice(tiny):
  config = _tiny_config(discriminator='small', ngf=4)
  state, _ = _split(tiny['D_small'])
  plain = convert.discriminator_params_from_torch(state, config)
  prefixed = convert.discriminator_params_from_torch(
      {'module.' + k: v for k, v in state.items()}, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, plain, prefixed)
  both = dict(state, **{'module.start_conv.bias': state['start_conv.bias']})
  with pytest.raises(ValueError, match='both with and without'):
    convert.discriminator_params_from_torch(both, config)


def test_torch_tensors_are_accepted(tiny):
  torch = pytest.importorskip('torch')
  config = _tiny_config(discriminator='small', ngf=4)
  state, _ = _split(tiny['D_small'])
  from_numpy = convert.discriminator_params_from_torch(state, config)
  from_torch = convert.discriminator_params_from_torch(
      {k: torch.from_numpy(v) for k, v in state.items()}, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_numpy, from_torch)


def test_only_official_architectures_convert():
  config = _tiny_config(generator='mlp', discriminator='mlp')
  with pytest.raises(ValueError, match='ncsnpp'):
    convert.generator_params_from_torch({}, config)
  with pytest.raises(ValueError, match="'small' and 'large'"):
    convert.discriminator_params_from_torch({}, config)


def test_cli_converts_an_official_generator_that_sampling_restores(tiny, tmp_path):
  """convert (from an .npz state dict) -> --mode=sample reproduces the official generator."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  state, _ = _split(tiny['G_default'])
  ckpt = tmp_path / 'netG_1.npz'
  np.savez(ckpt, **{'module.' + k: v for k, v in state.items()})
  config_file = tmp_path / 'tiny_official.py'
  config_file.write_text(
      'from configs import default\n'
      'def get_config():\n'
      '  c = default.get_config()\n'
      '  m = c.model\n'
      '  m.image_size, m.nf, m.ch_mult, m.num_res_blocks = 16, 8, (1, 2, 2), 1\n'
      '  m.attn_resolutions, m.n_mlp, m.nz, m.z_emb_dim = (8,), 2, 8, 16\n'
      '  m.ngf, m.t_emb_dim = 4, 16\n'
      '  c.sampling.num_images, c.sampling.batch_size = 4, 4\n'
      '  return c\n')
  root = os.path.join(os.path.dirname(__file__), '..')
  env = dict(os.environ, PYTHONPATH=root)
  workdir = tmp_path / 'work'
  convert_cmd = [sys.executable, '-m', 'ddgan_jax.convert', f'--config={config_file}',
                 f'--checkpoint={ckpt}', f'--workdir={workdir}']
  subprocess.run(convert_cmd, check=True, cwd=root, env=env, capture_output=True)
  again = subprocess.run(convert_cmd, cwd=root, env=env, capture_output=True, text=True)
  assert again.returncode != 0 and 'already holds checkpoints' in again.stderr
  # The converted workdir carries its config: sampling needs no --config.
  subprocess.run([sys.executable, '-m', 'ddgan_jax.main', f'--workdir={workdir}', '--mode=sample'],
                 check=True, cwd=root, env=env, capture_output=True)
  (npz,) = (workdir / 'samples').glob('*/images_*.npz')
  images = np.load(npz)['images']
  assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
  # Official weights (perturbed) give varied images; a random or zero generator would give grey.
  assert images.std() > 20
