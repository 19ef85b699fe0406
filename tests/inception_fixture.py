"""pytorch-fid's network with seeded random weights: the weights, and the fixture of its outputs.

``random_state_dict(seed)`` builds a full FID Inception state dict (PyTorch names and layouts)
from ``np.random.RandomState(seed)``, whose streams numpy keeps fixed, so the 95 MB of weights
need not be stored: ``tests/data/fid_inception_tiny.npz`` holds only the inputs and pytorch-fid's
outputs. Every tensor is random, batch-norm running statistics included, so no layer is trivial.

Regenerate the fixture (needs torch, torchvision and pytorch-fid) from the repository root:

    python -m tests.inception_fixture tests/data/fid_inception_tiny.npz
"""

import pathlib
import sys

import flax
import ml_collections
import numpy as np

from ddgan_jax.evaluation import inception
from ddgan_jax.evaluation import inception_weights
from tests.configs import tiny_digits

SEED = 2015
# The top-level modules whose outputs the fixture records (as per-channel spatial means).
BLOCKS = ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'Conv2d_3b_1x1', 'Conv2d_4a_3x3',
          'Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c', 'Mixed_6d',
          'Mixed_6e', 'Mixed_7a', 'Mixed_7b', 'Mixed_7c')


def random_state_dict(seed: int = SEED) -> dict[str, np.ndarray]:
  """A float32 state dict of pytorch-fid's ``fid_inception_v3()`` (no ``num_batches_tracked``).

  Convolution weights are N(0, 2 / fan_in), batch-norm scales 1 + 0.2 N(0, 1), shifts and running
  means 0.2 N(0, 1), running variances U(0.5, 1.5), the classifier N(0, 1 / 2048) plus a 0.1 N(0, 1)
  bias; keys are drawn in sorted order.
  """
  flat = flax.traverse_util.flatten_dict(inception.variables_template())
  shapes = {inception_weights.torch_key(p): inception_weights.torch_layout(
      np.zeros(spec.shape, np.uint8)).shape for p, spec in flat.items()}
  rng = np.random.RandomState(seed)
  state = {}
  for key in sorted(shapes):
    shape = shapes[key]
    if key.endswith('running_var'):
      value = rng.uniform(0.5, 1.5, shape)
    elif key == 'fc.weight':
      value = rng.standard_normal(shape) / np.sqrt(shape[1])
    elif key.endswith('weight') and len(shape) == 4:
      value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif key.endswith('weight'):
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    elif key == 'fc.bias':
      value = 0.1 * rng.standard_normal(shape)
    else:
      value = 0.2 * rng.standard_normal(shape)
    state[key] = value.astype(np.float32)
  return state


def tiny_image_config(tmp_path: pathlib.Path, cache_dir: str) -> ml_collections.ConfigDict:
  """tests/configs/tiny_digits.py trained on 16 random 8x8 grey images (dataset 'npz') and scored
  with the random Inception of ``random_state_dict``, both written under ``tmp_path``, in batches
  of 8 (Inception and sampling) with cache ``cache_dir``."""
  config = tiny_digits.get_config()
  config.data.dataset = 'npz'
  config.data.path = str(tmp_path / 'train.npz')
  np.savez(config.data.path, images=np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1),
                                                                        dtype=np.uint8))
  config.eval.inception_weights = str(tmp_path / 'inception.npz')
  inception_weights.save(inception_weights.from_torch_state_dict(random_state_dict()),
                         config.eval.inception_weights)
  config.eval.cache_dir = cache_dir
  config.eval.inception_batch_size = 8
  config.eval.batch_size = 8
  return config


def fixture_images() -> dict[str, np.ndarray]:
  """Two uint8 RGB images at 32 x 32 and two at 256 x 256 (smooth plus noise, full range)."""
  rng = np.random.RandomState(SEED + 1)
  out = {}
  for size in (32, 256):
    ramp = np.linspace(0, 255, size)[None, :, None, None] * np.ones((2, size, size, 3))
    noise = rng.uniform(-60, 60, (2, size, size, 3))
    out[f'images{size}'] = np.clip(np.rint(ramp + noise), 0, 255).astype(np.uint8)
  return out


def shrink_image() -> np.ndarray:
  """A uint8 grey image (1, 512, 384, 1), which pytorch-fid shrinks (no antialiasing) to 299."""
  return np.random.RandomState(SEED + 2).randint(0, 256, (1, 512, 384, 1)).astype(np.uint8)


def pytorch_fid_networks(state: dict[str, np.ndarray]):
  """pytorch-fid's ``fid_inception_v3()`` and ``InceptionV3([3])``, with ``state`` loaded.

  pytorch-fid downloads its weights through ``load_state_dict_from_url``; that function is
  replaced by one returning ``state`` while the networks are built.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as pf  # pylint: disable=g-import-not-at-top
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  original = pf.load_state_dict_from_url
  pf.load_state_dict_from_url = lambda *args, **kwargs: tensors
  try:
    return pf.fid_inception_v3().eval(), pf.InceptionV3([3]).eval()
  finally:
    pf.load_state_dict_from_url = original


def torch_outputs(model, state: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
  """pytorch-fid's pool3 and logits, and the spatial means of each block, for uint8 NHWC images."""
  import torch  # pylint: disable=g-import-not-at-top
  modules = [m for block in model.blocks for m in block if not isinstance(m, torch.nn.MaxPool2d)
             and not isinstance(m, torch.nn.AdaptiveAvgPool2d)]
  means = {}
  hooks = [m.register_forward_hook(
      lambda mod, inp, out, name=name: means.__setitem__(name, out.mean(dim=(2, 3)).numpy()))
           for name, m in zip(BLOCKS, modules)]
  x = torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy()).float() / 255.0
  with torch.no_grad():
    pool3 = model(x)[0][:, :, 0, 0]
    logits = torch.nn.functional.linear(pool3, torch.from_numpy(state['fc.weight']),
                                        torch.from_numpy(state['fc.bias']))
  for hook in hooks:
    hook.remove()
  return {'pool3': pool3.numpy(), 'logits': logits.numpy(),
          **{f'mean/{name}': means[name] for name in BLOCKS}}


def write_fixture(path: str) -> None:
  """Runs pytorch-fid's network on ``fixture_images`` and writes the fixture to ``path``."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  state = random_state_dict()
  _, model = pytorch_fid_networks(state)
  resize = lambda images: torch.nn.functional.interpolate(
      torch.from_numpy(np.transpose(images, (0, 3, 1, 2)).copy()).float() / 255.0,
      size=(299, 299), mode='bilinear', align_corners=False)[0, 0].numpy()
  arrays = {'resized512x384': resize(shrink_image())}
  for name, images in fixture_images().items():
    size = name.removeprefix('images')
    arrays[f'resized{size}'] = resize(images[:1, :, :, :1])
    for key, value in torch_outputs(model, state, images).items():
      arrays[f'{size}/{key}'] = value
  np.savez_compressed(path, **arrays)


if __name__ == '__main__':
  write_fixture(sys.argv[1])
