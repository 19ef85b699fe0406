"""The path every metric family shares: restore the EMA generator, sample, write the results."""

import json

from clu import metric_writers
from etils import epath
import jax
import ml_collections
import numpy as np

from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import rng as rng_lib
from ddgan_jax import sampling
from ddgan_jax import train_state as train_state_lib

EVAL_DIR = 'eval'


def draw_samples(
    config: ml_collections.ConfigDict, state: train_state_lib.TrainState
) -> np.ndarray:
  """``config.eval.num_samples`` EMA samples in batches of ``config.eval.batch_size``, logged.

  Batch b is drawn from ``fold_in(seed_stream(config.seed, 'eval'), b)`` by the loop every sampler
  shares (``sampling.stream_batches``), so the samples depend on the checkpoint, seed, number and
  batch size only, not on the device count.

  Returns:
    float32 samples (N, ...) in the data's range: (N, H, W, C) images or (N, 2) toy points, on
    every process.
  """
  num, batch = config.eval.num_samples, config.eval.batch_size
  if num < 1 or batch < 1:
    raise ValueError(
        f'config.eval.num_samples and config.eval.batch_size must be positive, got {num} and '
        f'{batch}.'
    )
  sample_config = config.copy_and_resolve_references()
  sample_config.sampling.batch_size = batch
  batch_fn = sampling.make_batch_fn(
      sample_config, models.build_generator(config), diffusion.schedule_from_config(config),
      sampling.make_mesh(),
  )
  stream = sampling.stream_batches(batch_fn, state.generator_variables(ema=True),
                                   rng_lib.seed_stream(config.seed, 'eval'), num, batch,
                                   'Sampled for evaluation')
  return np.concatenate([sampling.gathered_rows(out, count) for _, out, count in stream])


def to_scoring_range(config: ml_collections.ConfigDict, samples: np.ndarray) -> np.ndarray:
  """Images (N, H, W, C) quantised to uint8 as the saved PNGs are; toy points unchanged."""
  if samples.ndim == 4:
    return sampling.to_uint8(samples, config.model.centered)
  return samples


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
