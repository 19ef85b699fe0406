"""The FID Inception's weights: conversion from pytorch-fid's ``.pth``, a torch-free file, lookup.

pytorch-fid's weights (``pt_inception-2015-12-05-6726825d.pth``, a PyTorch state dict) become a
``.npz`` whose keys are the '/'-joined paths of the Flax variables (``params/Mixed_5b/branch1x1/
conv/kernel``, ``batch_stats/Mixed_5b/branch1x1/bn/mean``); reading it needs numpy only. Layouts:
convolution weights (O, I, kh, kw) become (kh, kw, I, O), the classifier's (out, in) become
(in, out); batch norm's ``weight``, ``bias``, ``running_mean`` and ``running_var`` become ``scale``,
``bias``, ``mean`` and ``var``, and its ``num_batches_tracked`` counters are dropped.

``locate`` finds the weights: the given path, else the converted file in the cache directory, else
the ``.pth`` there (converted once, which needs torch), else the ``.pth`` downloaded from
pytorch-fid's release URL into the cache, its SHA-256 checked against the prefix in its name.
"""

from collections.abc import Mapping
import hashlib
import io
import os
import urllib.error
import urllib.request

from absl import logging
from etils import epath
import flax
import numpy as np

from ddgan_jax.evaluation import inception

FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
TORCH_FILE = 'pt_inception-2015-12-05-6726825d.pth'
CONVERTED_FILE = 'fid_inception-2015-12-05-6726825d.npz'
SHA256_PREFIX = '6726825d'
_DOWNLOAD_TIMEOUT_S = 30
_LEAF_TO_TORCH = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                  'var': 'running_var'}


class WeightsNotFoundError(FileNotFoundError):
  """No Inception weights where they were looked for, and none could be downloaded."""


def torch_key(path: tuple[str, ...]) -> str:
  """The state dict key of a Flax variable path (collection, *modules, leaf)."""
  _, *modules, leaf = path
  return '.'.join(modules + [_LEAF_TO_TORCH[leaf]])


def torch_layout(value: np.ndarray) -> np.ndarray:
  """A Flax array in PyTorch's layout: conv kernels to (O, I, kh, kw), dense kernels to (out, in)."""
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  return value.T if value.ndim == 2 else value


def flax_layout(value: np.ndarray) -> np.ndarray:
  """The inverse of ``torch_layout``."""
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  return value.T if value.ndim == 2 else value


def _flat_template() -> dict[tuple[str, ...], tuple[int, ...]]:
  flat = flax.traverse_util.flatten_dict(inception.variables_template())
  return {path: tuple(spec.shape) for path, spec in flat.items()}


def _check(problems: list[str], what: str, advice: str) -> None:
  if problems:
    raise ValueError(f'{what} does not hold the FID Inception ({" | ".join(problems)}). {advice}')


def from_torch_state_dict(state_dict: Mapping[str, object]) -> dict:
  """Converts pytorch-fid's ``fid_inception_v3()`` state dict to ``InceptionV3`` variables.

  Args:
    state_dict: key -> array (numpy or torch tensors), e.g. ``torch.load`` of the ``.pth``.

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays.

  Raises:
    ValueError: naming every missing, extra or misshapen key.
  """
  source = {}
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked'):
      continue
    if hasattr(value, 'detach'):  # A torch tensor; torch itself is never imported here.
      value = value.detach().cpu().numpy()
    source[key] = np.asarray(value, np.float32)
  filled, missing, misshapen = {}, [], []
  for path, shape in _flat_template().items():
    key = torch_key(path)
    if key not in source:
      missing.append(key)
      continue
    value = flax_layout(source[key])
    if value.shape != shape:
      misshapen.append(f'{key} {source[key].shape} (expected '
                       f'{torch_layout(np.zeros(shape, np.uint8)).shape})')
      continue
    filled[path] = value
  extra = sorted(set(source) - {torch_key(p) for p in filled} - set(missing)
                 - {m.split(' ')[0] for m in misshapen})
  problems = []
  if missing:
    problems.append('missing keys: ' + ', '.join(missing))
  if misshapen:
    problems.append('misshapen keys: ' + ', '.join(misshapen))
  if extra:
    problems.append('extra keys: ' + ', '.join(extra))
  _check(problems, 'The state dict',
         f'Pass pytorch-fid\'s {TORCH_FILE} ({FID_WEIGHTS_URL}).')
  return flax.traverse_util.unflatten_dict(filled)


def save(variables: dict, path: str) -> None:
  """Writes ``InceptionV3`` variables as a float32 ``.npz`` keyed by '/'-joined paths."""
  flat = flax.traverse_util.flatten_dict(variables)
  buf = io.BytesIO()
  np.savez(buf, **{'/'.join(p): np.asarray(v, np.float32) for p, v in flat.items()})
  epath.Path(path).write_bytes(buf.getvalue())


def load(path: str) -> dict:
  """Reads a file written by ``save`` (no torch needed).

  Raises:
    ValueError: naming every missing, extra or misshapen entry.
  """
  with epath.Path(path).open('rb') as f:
    data = np.load(io.BytesIO(f.read()))
    stored = {tuple(k.split('/')): data[k] for k in data.files}
  template = _flat_template()
  missing = ['/'.join(p) for p in template if p not in stored]
  extra = ['/'.join(p) for p in stored if p not in template]
  misshapen = [f'{"/".join(p)} {stored[p].shape} (expected {s})' for p, s in template.items()
               if p in stored and stored[p].shape != s]
  problems = []
  if missing:
    problems.append('missing entries: ' + ', '.join(missing))
  if misshapen:
    problems.append('misshapen entries: ' + ', '.join(misshapen))
  if extra:
    problems.append('extra entries: ' + ', '.join(extra))
  _check(problems, f'The weights file {path}',
         'Write it with: python -m ddgan_jax.fid convert --checkpoint=' + TORCH_FILE
         + ' --out=WEIGHTS.npz')
  return flax.traverse_util.unflatten_dict(
      {p: np.asarray(v, np.float32) for p, v in stored.items()})


def load_torch_file(path: str) -> dict:
  """Converts a ``.pth`` state dict file to variables; needs torch (the ``torch`` extra)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        f'Reading {path} needs PyTorch: pip install -e ".[torch]", or convert it where torch is '
        'installed (python -m ddgan_jax.fid convert) and pass the .npz instead.') from None
  return from_torch_state_dict(torch.load(path, map_location='cpu', weights_only=True))


def _sha256(path: epath.Path) -> str:
  digest = hashlib.sha256()
  with path.open('rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _download(url: str, target: epath.Path) -> None:
  """Downloads ``url`` to ``target``, keeping it only if its SHA-256 starts with the known prefix."""
  partial = target.parent / (target.name + '.part')
  logging.info('Downloading the FID Inception weights from %s to %s.', url, target)
  with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
    partial.write_bytes(response.read())
  digest = _sha256(partial)
  if not digest.startswith(SHA256_PREFIX):
    partial.unlink()
    raise ValueError(f'The file downloaded from {url} has SHA-256 {digest}, which does not start '
                     f'with {SHA256_PREFIX}; it was deleted. Download it by hand and check it.')
  partial.rename(target)


def locate(path: str | None, cache_dir: str, url: str = FID_WEIGHTS_URL) -> epath.Path:
  """The converted weights file, found, converted or downloaded (see the module docstring).

  Args:
    path: a converted ``.npz`` or a ``.pth``; if given it must exist, and nothing else is tried.
    cache_dir: where the converted file and the ``.pth`` are looked for and kept ('~' expanded).
    url: where the ``.pth`` is downloaded from when the cache holds neither file.

  Returns:
    The path of a converted ``.npz`` or of a ``.pth`` given as ``path``.

  Raises:
    WeightsNotFoundError: no file and no download; the message names the file, the URL and the
      convert command.
  """
  if path:
    if not epath.Path(path).exists():
      raise WeightsNotFoundError(f'No Inception weights file at {path}.')
    return epath.Path(path)
  cache = epath.Path(os.path.expanduser(cache_dir))
  converted, torch_file = cache / CONVERTED_FILE, cache / TORCH_FILE
  if converted.exists():
    return converted
  if not torch_file.exists():
    try:
      cache.mkdir(parents=True, exist_ok=True)
      _download(url, torch_file)
    except (urllib.error.URLError, OSError) as e:
      raise WeightsNotFoundError(
          f'No FID Inception weights: neither {converted} nor {torch_file} exists, and '
          f'downloading {url} failed ({e}). Download {TORCH_FILE} from that URL on a machine with '
          'network access, then either put it at ' + str(torch_file) + ' (reading it needs '
          'torch) or convert it: python -m ddgan_jax.fid convert --checkpoint=' + TORCH_FILE
          + f' --out={converted} (or pass the converted file with --inception).') from None
  save(load_torch_file(str(torch_file)), str(converted))
  return converted


def load_any(path: epath.Path) -> dict:
  """Variables from a converted ``.npz`` or a ``.pth`` (the latter needs torch)."""
  if path.suffix == '.npz':
    return load(str(path))
  return load_torch_file(str(path))
