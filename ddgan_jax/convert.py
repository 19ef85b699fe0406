"""Converts official PyTorch DDGAN checkpoints (NVlabs/denoising-diffusion-gan) to Flax variables.

Library use (no torch needed when the state dict holds numpy arrays):

    variables = generator_params_from_torch(state_dict, config)
    x0 = build_generator(config).apply(variables, x_tp1, t, z)

Command line (``.pth`` files need the ``torch`` extra; ``.npz`` state dicts need nothing):

    python -m ddgan_jax.convert --config=configs/cifar10.py --checkpoint=netG_1200.pth \
        --workdir=/tmp/ddgan_cifar10_official
    python -m ddgan_jax.main --workdir=/tmp/ddgan_cifar10_official --mode=sample

The first writes the converted EMA generator into a new ``workdir`` as a step-0 training
checkpoint (generator and EMA set to the official weights, a freshly initialised discriminator)
with the config beside it (``config.json``); the second restores it and samples.

Layouts: PyTorch Linear weights are (out, in) and become Flax kernels (in, out); convolution
weights (O, I, kh, kw) become (kh, kw, I, O); GroupNorm ``weight`` becomes ``scale``; the ``NIN``
matrices are (in, out) in both. Every official key must be consumed and every Flax parameter
filled, otherwise a ValueError names the keys.
"""

from collections.abc import Mapping
import re
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddgan_jax import checkpoints
from ddgan_jax import models
from ddgan_jax import run_config
from ddgan_jax import train_state as train_state_lib

_MODULE_PREFIX = 'module.'


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor; torch itself is never imported here.
    value = value.detach().cpu().numpy()
  return np.asarray(value, dtype=np.float32)


def _clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Strips the DistributedDataParallel ``module.`` prefix and converts values to numpy."""
  out = {}
  for key, value in state_dict.items():
    name = key[len(_MODULE_PREFIX):] if key.startswith(_MODULE_PREFIX) else key
    if name in out:
      raise ValueError(f'The state dict holds {name!r} both with and without "module.".')
    out[name] = _to_numpy(value)
  return out


def _leaf_key(leaf: str, ndim: int) -> tuple[str, Any]:
  """Official parameter name and layout transform for a Flax leaf name."""
  if leaf == 'kernel':
    if ndim == 4:
      return 'weight', lambda w: np.transpose(w, (2, 3, 1, 0))
    return 'weight', np.transpose
  if leaf == 'scale':
    return 'weight', None
  if leaf in ('bias', 'W', 'b'):
    return leaf, None
  raise ValueError(f'No official counterpart for Flax parameter {leaf!r}.')


def _generator_prefix(path: tuple[str, ...]) -> list[str]:
  """Official module path of a generator submodule path (without the leaf name)."""
  top, rest = path[0], list(path[1:])
  if top == 'z_transform':
    index = int(rest[0].split('_')[1])
    return ['z_transform', str(2 * index + 1)]
  match = re.fullmatch(r'm(\d+)_\w+', top)
  if not match:
    raise ValueError(f'Unexpected generator module {top!r}.')
  return ['all_modules', str(int(match.group(1)))] + rest


def _discriminator_prefix(path: tuple[str, ...]) -> list[str]:
  """Official module path of a discriminator submodule path (without the leaf name)."""
  if path[0] == 't_embed':
    return ['t_embed', 'main', path[1].split('_')[1]]
  if re.fullmatch(r'conv\d+', path[0]) and path[1] in ('conv1', 'conv2', 'skip'):
    return [path[0], path[1], '0']
  return list(path)


def _convert(state_dict, template, prefix_fn, what: str) -> dict[str, Any]:
  """Fills every leaf of ``template`` (a variables tree of ShapeDtypeStructs) from the state dict."""
  source = _clean_state_dict(state_dict)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
  filled, missing, mismatched, used = {}, [], [], set()
  for path, spec in flat.items():
    collection, *module_path, leaf = path
    name, transform = _leaf_key(leaf, len(spec.shape))
    key = '.'.join(prefix_fn(tuple(module_path)) + [name])
    if key not in source:
      missing.append(key)
      continue
    value = source[key]
    value = transform(value) if transform else value
    if value.shape != tuple(spec.shape):
      mismatched.append(f'{key}: official {source[key].shape} -> {value.shape}, '
                        f'expected {tuple(spec.shape)}')
      continue
    used.add(key)
    filled[(collection, *module_path, leaf)] = jnp.asarray(value, dtype=spec.dtype)
  unused = sorted(set(source) - used - set(missing))
  problems = []
  if missing:
    problems.append('missing official keys: ' + ', '.join(missing))
  if mismatched:
    problems.append('shape mismatches: ' + '; '.join(mismatched))
  if unused:
    problems.append('official keys with no Flax parameter: ' + ', '.join(unused))
  if problems:
    raise ValueError(
        f'The {what} state dict does not match the config\'s architecture ('
        + ' | '.join(problems)
        + '). Check that --config describes the network that wrote the checkpoint '
        '(nf, ch_mult, n_mlp, image_size, discriminator size).'
    )
  return flax.traverse_util.unflatten_dict(filled)


def _templates(config: ml_collections.ConfigDict):
  m = config.model
  x = jax.ShapeDtypeStruct((1, m.image_size, m.image_size, m.num_channels), jnp.float32)
  t = jax.ShapeDtypeStruct((1,), jnp.int32)
  z = jax.ShapeDtypeStruct((1, m.nz), jnp.float32)
  rng = jax.random.key(0)
  return x, t, z, rng


def generator_params_from_torch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, Any]:
  """Converts an official generator state dict (e.g. ``netG_1200.pth``) to Flax variables.

  Args:
    state_dict: official key -> array (numpy or torch), with or without the ``module.`` prefix.
    config: the config whose ``model`` section describes the same network.

  Returns:
    The variables for ``build_generator(config).apply``: {'params': ...} (plus 'constants' for
    the Fourier embedding).

  Raises:
    ValueError: when keys are missing, left over, or of the wrong shape; the message names them.
  """
  if config.model.generator != 'ncsnpp':
    raise ValueError(f"Only the 'ncsnpp' generator has official weights, not "
                     f'{config.model.generator!r}.')
  x, t, z, rng = _templates(config)
  template = jax.eval_shape(models.build_generator(config).init, rng, x, t, z)
  return _convert(state_dict, template, _generator_prefix, 'generator')


def discriminator_params_from_torch(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict
) -> dict[str, Any]:
  """Converts an official discriminator state dict to Flax variables {'params': ...}.

  Args:
    state_dict: official key -> array (numpy or torch), with or without the ``module.`` prefix.
    config: the config whose ``model`` section describes the same network.

  Returns:
    The variables for ``build_discriminator(config).apply``.

  Raises:
    ValueError: when keys are missing, left over, or of the wrong shape; the message names them.
  """
  if config.model.discriminator not in ('small', 'large'):
    raise ValueError(f"Only the 'small' and 'large' discriminators have official weights, not "
                     f'{config.model.discriminator!r}.')
  x, t, _, rng = _templates(config)
  template = jax.eval_shape(models.build_discriminator(config).init, rng, x, t, x)
  return _convert(state_dict, template, _discriminator_prefix, 'discriminator')


def load_state_dict(path: str) -> dict[str, Any]:
  """Reads an official checkpoint: a ``.pth`` (needs torch) or an ``.npz`` of named arrays."""
  file = epath.Path(path)
  if not file.exists():
    raise FileNotFoundError(f'No checkpoint file at {path}.')
  if file.suffix == '.npz':
    with file.open('rb') as f:
      data = np.load(f)
      return {k: data[k] for k in data.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        f'Reading {path} needs PyTorch: pip install "ddgan_jax[torch]" (or convert it to an .npz '
        'of named arrays elsewhere).'
    ) from None
  with file.open('rb') as f:
    state = torch.load(f, map_location='cpu', weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict.')
  if 'netG_dict' in state:
    raise ValueError(
        f'{path} is a resumable content.pth; pass the EMA generator netG_<epoch>.pth instead.')
  return dict(state)


def write_generator_checkpoint(
    state_dict: Mapping[str, Any], config: ml_collections.ConfigDict, workdir: str
) -> epath.Path:
  """Saves converted official generator weights as a step-0 training checkpoint of ``workdir``.

  Args:
    state_dict: the official EMA generator state dict.
    config: the config describing the same generator.
    workdir: a workdir without checkpoints (existing ones are never overwritten).

  Returns:
    The checkpoint directory.
  """
  ckpt = checkpoints.from_config(workdir, config)
  try:
    if ckpt.latest_step() is not None:
      raise FileExistsError(
          f'{ckpt.directory} already holds checkpoints (newest step {ckpt.latest_step()}); '
          'convert into a new --workdir so that nothing is overwritten.')
    variables = generator_params_from_torch(state_dict, config)
    state = jax.jit(train_state_lib.state_initializer(
        config, models.build_generator(config), models.build_discriminator(config), 1))(
            jax.random.PRNGKey(config.seed))
    params = variables['params']
    state = state.replace(
        g_params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        g_constants=variables.get('constants', state.g_constants),
    )
    run_config.record(config, workdir, has_checkpoints=False)
    ckpt.save(state)
    ckpt.wait_until_finished()
  finally:
    ckpt.close()
  return ckpt.directory


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  args = flags.FLAGS
  directory = write_generator_checkpoint(load_state_dict(args.checkpoint), args.config,
                                         args.workdir)
  logging.info('Wrote the converted generator to %s; sample with: python -m ddgan_jax.main '
               '--workdir=%s --mode=sample', directory, args.workdir)


if __name__ == '__main__':
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config describing the official network.')
  flags.DEFINE_string('checkpoint', None, 'Official netG_<epoch>.pth (or an .npz state dict).')
  flags.DEFINE_string('workdir', None, 'New workdir to write the converted checkpoint into.')
  flags.mark_flags_as_required(['config', 'checkpoint', 'workdir'])
  app.run(main)
