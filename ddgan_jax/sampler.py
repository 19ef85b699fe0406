"""``ddgan_jax.load_sampler``: the EMA generator of a trained run, sampled from Python.

    sampler = ddgan_jax.load_sampler('/tmp/ddgan_digits')  # The newest checkpoint.
    images = sampler.sample(1000, seed=0)         # uint8 (1000, H, W, C).
    floats = sampler.sample_float(1000, seed=0)   # float32 in the data's range.

``sample(n, seed)`` gives the images ``--mode=sample`` writes with ``--config.seed=seed``, byte
for byte: both draw batches of the run's ``config.sampling.batch_size`` from the 'sample' stream
of ``seed`` (``ddgan_jax.rng``), sharded over all devices. The batch is compiled once, on the
first call; later calls of any ``n``, and samplers of other checkpoints of the same architecture
and batch size, reuse it.
"""

from collections.abc import Callable, Iterator
import json
from typing import Any

import jax
import ml_collections
import numpy as np

from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import run_config
from ddgan_jax import sampling
from ddgan_jax import train_state as train_state_lib

_BATCH_FNS: dict[tuple, Callable[[Any, jax.Array], jax.Array]] = {}


def _batch_fn(config: ml_collections.ConfigDict, mesh) -> Callable[[Any, jax.Array], jax.Array]:
  """``sampling.make_batch_fn``, one per architecture, batch size, dtype and mesh."""
  key = (json.dumps(run_config.architecture(config), sort_keys=True),
         config.sampling.batch_size, config.training.dtype, mesh)
  if key not in _BATCH_FNS:
    _BATCH_FNS[key] = sampling.make_batch_fn(
        config, models.build_generator(config), diffusion.schedule_from_config(config), mesh
    )
  return _BATCH_FNS[key]


class Sampler:
  """The EMA generator of one checkpoint, ready to sample.

  Attributes:
    config: the run's config.
    step: the step of the restored checkpoint.
    is_images: False for the 2-D toy data, whose samples are points (N, 2).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
    """Restores the checkpoint of ``step`` (None: the newest) of ``workdir``.

    Args:
      config: the config the run was trained with.
      workdir: the run's workdir.
      step: the checkpoint's step; None restores the newest readable one.
    """
    models.check_image_size(config)
    self.config = config
    mesh = sampling.make_mesh()
    state = sampling.restore_state(config, workdir, mesh, step)
    self.step = int(jax.device_get(state.step))
    self.is_images = len(train_state_lib.data_shape(config, 1)) == 4
    self._variables = state.generator_variables(ema=True)
    self._batch_fn = _batch_fn(config, mesh)

  def stream(self, n: int, seed: int | None = None) -> Iterator[tuple[int, jax.Array, int]]:
    """``sampling.stream_batches`` over ``n`` samples of ``seed`` (default: config.seed)."""
    if n < 1:
      raise ValueError(f'The number of samples must be positive, got {n}.')
    seed = self.config.seed if seed is None else seed
    return sampling.stream_batches(self._batch_fn, self._variables,
                                   rng_lib.seed_stream(seed, 'sample'), n,
                                   self.config.sampling.batch_size, f'Sampled (step {self.step})')

  def sample_float(self, n: int, seed: int | None = None) -> np.ndarray:
    """``n`` samples as float32 in the data's range, on every process.

    Returns:
      (n, H, W, C) images in [-1, 1] (config.model.centered) or [0, 1], or (n, 2) toy points.
    """
    return np.concatenate([sampling.gathered_rows(out, count)
                           for _, out, count in self.stream(n, seed)])

  def sample(self, n: int, seed: int | None = None) -> np.ndarray:
    """``n`` samples as uint8 images (n, H, W, C), as ``--mode=sample`` writes them."""
    if not self.is_images:
      raise ValueError('The 2-D toy data have no images; use sample_float for their points.')
    return np.concatenate([
        sampling.to_uint8(sampling.gathered_rows(out, count), self.config.model.centered)
        for _, out, count in self.stream(n, seed)
    ])


def load_sampler(
    workdir: str, step: int | None = None, config: ml_collections.ConfigDict | None = None
) -> Sampler:
  """The sampler of a checkpoint of ``workdir``.

  Args:
    workdir: a training workdir, or one written by ``python -m ddgan_jax.convert``.
    step: the checkpoint's step; None takes the newest.
    config: None uses the config saved in the workdir; a config given is checked against it
      (needed only for workdirs that predate saved configs).

  Returns:
    A ``Sampler``.
  """
  return Sampler(run_config.resolve(config, workdir), workdir, step)
