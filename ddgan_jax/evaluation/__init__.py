"""``--mode=eval``: score a run's EMA generator with the metric family of its dataset.

Every family shares one path (``evaluate``): restore the checkpoint, draw
``config.eval.num_samples`` EMA samples from ``config.seed`` (timing the sampler), quantise images
to uint8 as the saved PNGs are (``config.eval.image_format='jpeg'`` then passes them through JPEG
files, as the official test_ddgan.py did), score them, and write
``<workdir>/eval/metrics_step<N>.json`` plus TensorBoard scalars under ``<workdir>/eval`` at step N.
Any number of processes may run it: the samples stay a global jax.Array over all devices, every
process computes the metrics and process 0 writes the files.

A family is a module with four functions (see ``toy2d``, ``digits``, ``stacked_digits``,
``stacked_mnist`` and ``image_metrics``):
  check_config(config): fails fast on a config the family cannot score.
  score(config, samples, out_dir, step) -> dict: the metrics (JSON-serialisable) of the samples of
    ``common.to_scoring_range`` (a global jax.Array; ``common.on_host`` gives every process all of
    them as numpy); it may write extra files into out_dir (process 0 only).
  summary(metrics) -> str: a one-line account for the log.
  training_metric(config, mesh) -> (name, fn): the family's main metric for evaluation during
    training (``during_training``), fn(samples) -> float, lower better and the same on every
    process; what it needs (a network, reference statistics) is loaded once, when it is called.
To add one, write such a module and map the dataset's name to it in ``FAMILIES``.

With ``config.eval.per_level``, the metrics also hold 'levels': the discriminator's separation of
real and fake pairs at every level and the family's scores of chains started from real data
noised to each level (``levels.py``), for the families that define ``score_levels`` and its
companions; for the others the config fails before anything is restored.
"""

from types import ModuleType

from absl import logging
from etils import epath
import jax
import ml_collections

from ddgan_jax import sampling
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import digits
from ddgan_jax.evaluation import image_metrics
from ddgan_jax.evaluation import levels
from ddgan_jax.evaluation import stacked_digits
from ddgan_jax.evaluation import stacked_mnist
from ddgan_jax.evaluation import toy2d

FAMILIES: dict[str, ModuleType] = {
    'toy2d': toy2d,
    'digits': digits,
    'stacked_digits': stacked_digits,
    'stackmnist': stacked_mnist,
    **{name: image_metrics for name in (*image_metrics.INDEXED_SOURCES,
                                        *image_metrics.STREAMING_DATASETS)},
}


def family_for(dataset: str) -> ModuleType:
  """The metric family of ``config.data.dataset``, or a ValueError naming those supported."""
  if dataset not in FAMILIES:
    raise ValueError(
        f'No metrics for config.data.dataset={dataset!r}: evaluation (--mode=eval and '
        f'config.training.eval_every) supports {", ".join(repr(d) for d in FAMILIES)}. For '
        'other data use --mode=sample and score the written images, e.g. with '
        'python -m ddgan_jax.fid.'
    )
  return FAMILIES[dataset]


def check_config(config: ml_collections.ConfigDict) -> ModuleType:
  """Fails fast, before any checkpoint is read, on a config ``evaluate`` cannot score.

  Returns:
    The metric family of ``config.data.dataset``.
  """
  family = family_for(config.data.dataset)
  common.check_config(config)
  family.check_config(config)
  if config.eval.per_level and not hasattr(family, 'score_levels'):
    supported = sorted({d for d, f in FAMILIES.items() if hasattr(f, 'score_levels')})
    raise ValueError(
        f'config.eval.per_level=True, but the metrics of config.data.dataset='
        f'{config.data.dataset!r} have no per-level part; those of '
        f'{", ".join(repr(d) for d in supported)} do. Set --config.eval.per_level=False, or give '
        f'{family.__name__} score_levels, level_images and level_summary (see levels.py).'
    )
  return family


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> dict:
  """Scores the EMA generator of a checkpoint of ``workdir``.

  The same checkpoint, config and device kind always give the same numbers.

  Args:
    config: the config the run was trained with.
    workdir: the training workdir; must hold a checkpoint.
    step: the checkpoint's step; None takes ``config.eval.step``, where -1 scores the newest
      readable one.

  Returns:
    What ``eval/metrics_step<N>.json`` holds: the family's metrics plus 'step' (the checkpoint's),
    'dataset', 'num_samples', 'num_timesteps' (T), 'device_kind', 'device_count', 'dtype'
    (config.training.dtype, the compute dtype), 'sampling_seconds_per_100' (wall time of sampling
    at T per 100 images, compilation excluded; see ``common.draw_samples``) and, for images,
    'image_format', and 'levels' (``levels.evaluate_levels``) when config.eval.per_level is True.
  """
  family = check_config(config)
  if step is None and config.eval.step >= 0:
    step = config.eval.step
  mesh = sampling.make_mesh()
  state = sampling.restore_state(config, workdir, mesh, step)
  step = int(jax.device_get(state.step))
  samples, seconds_per_100 = common.draw_samples(
      config, common.make_batch_fn(config, mesh), state.generator_variables(ema=True),
      config.eval.num_samples)
  samples = common.to_scoring_range(config, samples)
  out_dir = epath.Path(workdir) / common.EVAL_DIR
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
  metrics = {
      'step': step,
      'dataset': config.data.dataset,
      'num_samples': len(samples),
      'num_timesteps': config.diffusion.num_timesteps,
      'device_kind': jax.devices()[0].device_kind,
      'device_count': jax.device_count(),
      'dtype': config.training.dtype,
      'sampling_seconds_per_100': seconds_per_100,
      **({'image_format': config.eval.image_format} if samples.ndim == 4 else {}),
      **family.score(config, samples, out_dir, step),
  }
  line = family.summary(metrics)
  if config.eval.per_level:
    metrics['levels'] = levels.evaluate_levels(config, state, family, mesh)
    line += '.\nPer level: ' + levels.summary(metrics['levels'], family)
  path = common.write_results(workdir, metrics)
  logging.info('Step %d, %s: %s. Written to %s.', step, config.data.dataset, line, path)
  return metrics
