"""Evaluation during training: every ``training.eval_every`` steps, the dataset's main metric.

``Evaluator`` scores ``config.eval.num_samples_train`` EMA samples with the ``training_metric`` of
the dataset's family (lower is better):
  images (cifar10, stackmnist, image_folder, npz, celeba_hq_256, lsun_church): 'fid', the FID
    against the reference of ``--mode=eval`` (``image_metrics``);
  digits: 'frechet_distance', of the classifier's features to the held-out digits';
  toy2d: 'reverse_kl', of the mode histogram.
It logs 'eval/<metric>' and 'eval/sampling_seconds_per_100' to the training's TensorBoard writer
and keeps the checkpoint with the lowest value so far in ``<workdir>/checkpoints_best/<step>``
(``checkpoints.BestCheckpointer``), whose value a resumed run reads back. ``--mode=sample`` and
``--mode=eval`` restore it by its step (``sampling.step`` or ``eval.step``).

The samples are drawn as ``--mode=eval`` draws them (the 'eval' seed stream, ``eval.batch_size``,
``eval.image_format``), so every evaluation of a run sees the same noise, and its samples are the
first ``num_samples_train`` of ``--mode=eval``'s. The sampler and the metric compile once; what the
metric needs (Inception weights and reference statistics, the digits classifier) is loaded or
computed once, when the ``Evaluator`` is built, before the first training step.

In a multi-process run every process evaluates: the samples stay a global array over all devices,
every process takes process 0's value (``common.process_zero_value``), so that all of them agree
on the best checkpoint, which they save together, while only process 0 writes TensorBoard
summaries.
"""

from absl import logging
from clu import metric_writers
from jax.sharding import Mesh
import ml_collections

from ddgan_jax import checkpoints
from ddgan_jax import evaluation
from ddgan_jax import train_state as train_state_lib
from ddgan_jax.evaluation import common


class Evaluator:
  """Scores the EMA generator during training and keeps the best checkpoint.

  Attributes:
    metric: the tracked metric's name ('fid', 'frechet_distance' or 'reverse_kl').
    best: the checkpoints_best/ checkpointer.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh: Mesh,
               writer: metric_writers.MetricWriter):
    """Checks the config, loads what the metric needs and opens checkpoints_best/.

    Args:
      config: the run's config, with ``training.eval_every`` > 0.
      workdir: the training workdir.
      mesh: the training's device mesh; sampling and the metric run over it.
      writer: the training's metric writer.

    Raises:
      ValueError: on a dataset without metrics or eval settings that cannot work, naming them.
    """
    num = config.eval.num_samples_train
    if num < 2:
      raise ValueError(f'config.eval.num_samples_train must be at least 2 (statistics of the '
                       f'samples), got {num}.')
    family = evaluation.family_for(config.data.dataset)
    common.check_config(config)
    family.check_config(config)
    self._config, self._writer = config, writer
    self.metric, self._score = family.training_metric(config, mesh)
    self._batch_fn = common.make_batch_fn(config, mesh)
    self.best = checkpoints.BestCheckpointer(workdir, self.metric)
    best = self.best.best()
    if best is not None:
      logging.info('Best %s so far: %.4f at step %d (%s).', self.metric, best[1], best[0],
                   self.best.directory)

  def __call__(self, state: train_state_lib.TrainState, step: int) -> float:
    """Scores the EMA generator of ``state``, logs the value and keeps ``state`` if it is best.

    Args:
      state: the training state after ``step`` steps.
      step: the step to log at.

    Returns:
      The metric's value.
    """
    samples, seconds_per_100 = common.draw_samples(
        self._config, self._batch_fn, state.generator_variables(ema=True),
        self._config.eval.num_samples_train)
    value = common.process_zero_value(
        self._score(common.to_scoring_range(self._config, samples)))
    self._writer.write_scalars(step, {f'eval/{self.metric}': value,
                                      'eval/sampling_seconds_per_100': seconds_per_100})
    saved = self.best.save_if_better(state, value)
    logging.info('Step %d: %s %.4f on %d samples%s.', step, self.metric, value, len(samples),
                 f'; the best so far, saved in {self.best.directory}' if saved else '')
    return value

  def close(self) -> None:
    """Waits for the best checkpoint's save and closes its directory."""
    self.best.wait_until_finished()
    self.best.close()
