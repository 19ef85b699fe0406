"""Sampling with the EMA generator: batched, device-count independent, and written to disk.

``sample_and_save`` (``--mode=sample``) restores the newest checkpoint of a workdir and writes
``samples/step<step>_seed<seed>_n<num>.npz`` (uint8 NHWC ``images``, or float32 ``samples``
(N, D) for the 2-D toy data) plus a .png of the same name (an image grid, or a 2-D histogram).
The name holds everything the samples depend on, so a rerun rewrites identical files only.
"""

import io
import math

from absl import logging
from etils import epath
import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from ddgan_jax import checkpoints
from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import train_state as train_state_lib

SAMPLES_DIR = 'samples'
_TOY_EXTENT = 6.0  # The toy histograms cover [-6, 6]^2; the toy data lie within about 4.5.
_TOY_BINS = 256


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process, with axis name 'data'."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh, batch: int) -> NamedSharding:
  """Splits the leading axis over 'data' when it divides evenly, else replicates."""
  return NamedSharding(mesh, P('data') if batch % mesh.size == 0 else P())


def make_generate_fn(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    schedule: diffusion.Schedule,
    mesh: Mesh,
):
  """Returns generate(variables, rng, num) -> float32 samples (num, ...) as a numpy array.

  The samples come in batches of ``config.sampling.batch_size``; batch b uses fold_in(rng, b)
  and is drawn at its full (global) shape, so the result does not depend on the device count
  or on ``num`` beyond truncation.
  """
  batch = config.sampling.batch_size
  if batch < 1:
    raise ValueError(f'config.sampling.batch_size must be positive, got {batch}.')
  shape = train_state_lib.data_shape(config, batch)
  replicated = NamedSharding(mesh, P())

  def sample_batch(variables, rng):
    g = lambda x, t, z: generator.apply(variables, x, t, z, train=False)
    return diffusion.sample(rng, schedule, g, shape, config.model.nz)

  jitted = jax.jit(
      sample_batch, in_shardings=(replicated, replicated), out_shardings=batch_sharding(mesh, batch)
  )

  def generate(variables, rng: jax.Array, num: int) -> np.ndarray:
    chunks = []
    for b in range(math.ceil(num / batch)):
      out = jitted(variables, jax.random.fold_in(rng, b))
      chunks.append(np.asarray(jax.device_get(_replicate(out, replicated))))
    return np.concatenate(chunks)[:num]

  return generate


def _replicate(x: jax.Array, replicated: NamedSharding) -> jax.Array:
  """Gathers a sharded array so every process can read all of it."""
  return jax.jit(lambda a: a, out_shardings=replicated)(x)


def to_uint8(x: np.ndarray, centered: bool) -> np.ndarray:
  """Data-range floats ([-1, 1] if centered, else [0, 1]) to uint8, rounding half up."""
  unit = (x + 1.0) / 2.0 if centered else x
  return np.clip(np.floor(unit * 255.0 + 0.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, gap: int = 2) -> np.ndarray:
  """Tiles uint8 images (N, H, W, C) into a near-square grid with mid-grey borders.

  Args:
    images: (N, H, W, C) uint8.
    gap: border width in pixels, around and between the tiles.

  Returns:
    (rows (H + gap) + gap, cols (W + gap) + gap, C) uint8.
  """
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), 128, np.uint8)
  for i, img in enumerate(images):
    r, k = divmod(i, cols)
    top, left = gap + r * (h + gap), gap + k * (w + gap)
    grid[top:top + h, left:left + w] = img
  return grid


def toy_histogram(samples: np.ndarray) -> np.ndarray:
  """A (256, 256, 1) uint8 log-density picture of 2-D samples (N, 2) over [-6, 6]^2."""
  hist, _, _ = np.histogram2d(
      samples[:, 1], samples[:, 0], bins=_TOY_BINS, range=[[-_TOY_EXTENT, _TOY_EXTENT]] * 2
  )
  picture = np.log1p(hist[::-1])
  picture = picture / max(picture.max(), 1e-12)
  return (picture * 255.0).astype(np.uint8)[..., None]


def samples_picture(samples: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """A uint8 (H, W, C) picture of float samples: an image grid, or a histogram for 2-D data."""
  if samples.ndim == 2:
    return toy_histogram(samples)
  return image_grid(to_uint8(samples, config.model.centered))


def _write_png(path: epath.Path, picture: np.ndarray) -> None:
  buf = io.BytesIO()
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buf, format='PNG')
  path.write_bytes(buf.getvalue())


def restore_state(
    config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, step: int | None = None
) -> train_state_lib.TrainState:
  """Restores a training state of ``workdir``, replicated over ``mesh``.

  Args:
    config: the config the run was trained with.
    workdir: the training workdir.
    mesh: the devices to replicate the state over.
    step: the checkpoint's step; None restores the newest readable one.

  Raises:
    checkpoints.NoCheckpointError: no checkpoint, or none of ``step``; the message lists those
      available.
  """
  generator = models.build_generator(config)
  discriminator = models.build_discriminator(config)
  abstract = jax.eval_shape(
      lambda rng: train_state_lib.create_train_state(rng, config, generator, discriminator, 1),
      jax.random.PRNGKey(0),
  )
  replicated = NamedSharding(mesh, P())
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                        abstract)
  ckpt = checkpoints.Checkpointer(workdir, config.checkpoint.max_to_keep)
  try:
    if step is None:
      return ckpt.restore_latest(target)
    available = sorted(ckpt.manager.all_steps())
    if step not in available:
      raise checkpoints.NoCheckpointError(
          f'No checkpoint of step {step} in {ckpt.directory}; it holds steps {available}. Pass '
          'one of them, or no step for the newest.'
      )
    return ckpt.manager.restore(step, args=ocp.args.StandardRestore(target))
  except checkpoints.NoCheckpointError as e:
    if step is not None:
      raise
    raise checkpoints.NoCheckpointError(
        f'{e} Train first (--mode=train with the same --workdir) or pass the workdir of a '
        'trained run.'
    ) from None
  finally:
    ckpt.close()


def sample_and_save(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Draws ``config.sampling.num_images`` EMA samples from ``config.seed`` and writes them.

  Args:
    config: the config the run was trained with.
    workdir: the training workdir (local or gs://); must hold a checkpoint.

  Returns:
    The path of the written .npz file.
  """
  num = config.sampling.num_images
  if num < 1:
    raise ValueError(f'config.sampling.num_images must be positive, got {num}.')
  models.check_image_size(config)
  mesh = make_mesh()
  state = restore_state(config, workdir, mesh)
  step = int(jax.device_get(state.step))
  generate = make_generate_fn(
      config, models.build_generator(config), diffusion.schedule_from_config(config), mesh
  )
  samples = generate(state.generator_variables(ema=True),
                     rng_lib.seed_stream(config.seed, 'sample'), num)
  out_dir = epath.Path(workdir) / SAMPLES_DIR
  stem = f'step{step}_seed{config.seed}_n{num}'
  npz_path = out_dir / f'{stem}.npz'
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    if samples.ndim == 2:
      np.savez(buf, samples=samples.astype(np.float32))
    else:
      np.savez(buf, images=to_uint8(samples, config.model.centered))
    npz_path.write_bytes(buf.getvalue())
    _write_png(out_dir / f'{stem}.png', samples_picture(samples, config))
    logging.info('Wrote %d samples of the step-%d EMA generator to %s.', num, step, npz_path)
  return npz_path
