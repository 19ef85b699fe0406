"""The path every metric family shares: check, sample and time, quantise, write the results."""

from collections.abc import Callable
import functools
import io
import json
import time

from clu import metric_writers
from etils import epath
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import ml_collections
import numpy as np
from PIL import Image

from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import sampling

EVAL_DIR = 'eval'
IMAGE_FORMATS = ('png', 'jpeg')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any sampling, on eval settings that cannot work."""
  e = config.eval
  if e.num_samples < 1 or e.batch_size < 1:
    raise ValueError(
        f'config.eval.num_samples and config.eval.batch_size must be positive, got '
        f'{e.num_samples} and {e.batch_size}.'
    )
  if e.image_format not in IMAGE_FORMATS:
    raise ValueError(
        f'config.eval.image_format must be one of {", ".join(repr(f) for f in IMAGE_FORMATS)}, '
        f"got {e.image_format!r}: 'png' scores the samples losslessly, 'jpeg' as the official "
        'test_ddgan.py saved them.'
    )


def make_batch_fn(config: ml_collections.ConfigDict, mesh: Mesh):
  """The sampler of evaluation: ``sampling.make_batch_fn`` at ``config.eval.batch_size`` rows."""
  sample_config = config.copy_and_resolve_references()
  sample_config.sampling.batch_size = config.eval.batch_size
  return sampling.make_batch_fn(sample_config, models.build_generator(config),
                                diffusion.schedule_from_config(config), mesh)


@functools.cache
def _concatenate(mesh: Mesh, num: int) -> Callable[[list[jax.Array]], jax.Array]:
  return jax.jit(lambda batches: jnp.concatenate(batches)[:num],
                 out_shardings=sampling.batch_sharding(mesh, num))


def draw_samples(
    config: ml_collections.ConfigDict, batch_fn, variables: dict, num: int
) -> tuple[jax.Array, float]:
  """``num`` EMA samples in batches of ``config.eval.batch_size``, and the time they took.

  Batch b is drawn from ``fold_in(seed_stream(config.seed, 'eval'), b)`` by the loop every sampler
  shares (``sampling.stream_batches``), so the samples depend on the checkpoint, seed, number and
  batch size only, not on the device or process count. They stay on the devices.

  Args:
    config: the run's config.
    batch_fn: ``make_batch_fn(config, mesh)``.
    variables: the EMA generator's variables.
    num: how many samples.

  Returns:
    (float32 samples (num, ...) in the data's range, (N, H, W, C) images or (N, 2) toy points: a
     global jax.Array over the sampler's mesh, split over 'data' when ``num`` is a multiple of the
     device count and replicated otherwise; sampling seconds per 100 images). The time runs from
     the end of the first batch, which includes compilation, to the end of the last, over the rows
     computed in between; with one batch only, a second, compiled one is drawn and timed instead.
  """
  batch = config.eval.batch_size
  rng = rng_lib.seed_stream(config.seed, 'eval')
  batches, first_done = [], 0.0
  for start, out, _ in sampling.stream_batches(batch_fn, variables, rng, num, batch,
                                               'Sampled for evaluation'):
    batches.append(out.block_until_ready())
    if start == 0:
      first_done = time.perf_counter()
  elapsed, timed = time.perf_counter() - first_done, batch * (len(batches) - 1)
  if not timed:
    begin = time.perf_counter()
    jax.block_until_ready(batch_fn(variables, jax.random.fold_in(rng, 1)))
    elapsed, timed = time.perf_counter() - begin, batch
  return _concatenate(batches[0].sharding.mesh, num)(batches), 100.0 * elapsed / timed


def on_host(samples: np.ndarray | jax.Array) -> np.ndarray:
  """Every row of ``samples`` (a global jax.Array, or numpy) as a numpy array, on every process."""
  if isinstance(samples, jax.Array):
    return sampling.gathered_rows(samples, len(samples))
  return np.asarray(samples)


def process_zero_value(value: float) -> float:
  """Process 0's ``value`` on every process, bit for bit (float64 sent as two int32 words).

  Decisions taken together, such as saving a best checkpoint, must not depend on the processes
  computing bit-identical metrics on different hosts.
  """
  if jax.process_count() == 1:
    return value
  words = np.array([value], np.float64).view(np.int32)
  return float(np.asarray(multihost_utils.broadcast_one_to_all(words)).view(np.float64)[0])


def jpeg_round_trip(images: np.ndarray) -> np.ndarray:
  """uint8 images (N, H, W, C) as the official test_ddgan.py scored them, through JPEG files.

  It saved each sample with ``torchvision.utils.save_image`` to a ``.jpg``: grey repeated to RGB,
  written by PIL with its default JPEG settings (quality 75, 4:2:0 chroma subsampling); pytorch-fid
  read the files back as RGB. Grey images keep one channel here: their chroma is constant, so the
  three decoded channels are equal.
  """
  out = np.empty_like(images)
  for i, image in enumerate(images):
    buf = io.BytesIO()
    Image.fromarray(np.repeat(image, 3 // image.shape[-1], axis=-1)).save(buf, format='JPEG')
    decoded = np.asarray(Image.open(buf).convert('RGB'))
    out[i] = decoded[..., :images.shape[-1]]
  return out


def _jpeg_in_place(images: jax.Array) -> jax.Array:
  """``jpeg_round_trip`` of a global uint8 jax.Array: each process encodes the rows it holds."""
  done, shards = {}, []
  for shard in images.addressable_shards:
    rows = (shard.index[0].start, shard.index[0].stop)
    if rows not in done:
      done[rows] = jpeg_round_trip(np.asarray(shard.data))
    shards.append(jax.device_put(done[rows], shard.device))
  return jax.make_array_from_single_device_arrays(images.shape, images.sharding, shards)


_quantise = jax.jit(sampling.to_uint8, static_argnums=1)


def to_scoring_range(
    config: ml_collections.ConfigDict, samples: np.ndarray | jax.Array
) -> np.ndarray | jax.Array:
  """Samples as the metrics take them: toy points unchanged, images (N, H, W, C) as uint8.

  Images are quantised as the saved PNGs are (``sampling.to_uint8``) where they are: a numpy
  array on the host, a jax.Array on its devices, into an array sharded as ``samples``. For
  ``config.eval.image_format='jpeg'`` they then pass through ``jpeg_round_trip``, each process
  taking the rows it holds of a jax.Array and putting them back on their devices.
  """
  if samples.ndim != 4:
    return samples
  if isinstance(samples, np.ndarray):
    images = sampling.to_uint8(samples, config.model.centered)
    return jpeg_round_trip(images) if config.eval.image_format == 'jpeg' else images
  images = _quantise(samples, config.model.centered)
  return _jpeg_in_place(images) if config.eval.image_format == 'jpeg' else images


def _scalars(metrics: dict, prefix: str = '') -> dict[str, float]:
  """The numbers of a nested metrics dict, keyed by their '/'-joined path (lists left out)."""
  out = {}
  for key, value in metrics.items():
    if isinstance(value, dict):
      out.update(_scalars(value, f'{prefix}{key}/'))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != 'step':
      out[f'{prefix}{key}'] = value
  return out


def write_results(workdir: str, metrics: dict) -> epath.Path:
  """Writes ``eval/metrics_step<N>.json`` and TensorBoard scalars at step N (process 0 only).

  Args:
    workdir: the training workdir.
    metrics: JSON-serialisable, with an int 'step'; +inf is written as Infinity.

  Returns:
    The path of the JSON file.
  """
  out_dir = epath.Path(workdir) / EVAL_DIR
  path = out_dir / f'metrics_step{metrics["step"]}.json'
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + '\n')
    writer = metric_writers.create_default_writer(str(out_dir))
    writer.write_scalars(metrics['step'], _scalars(metrics))
    writer.close()
  return path
