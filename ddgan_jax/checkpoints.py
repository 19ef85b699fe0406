"""Orbax checkpoints of the training state, with fallback past unreadable newest checkpoints.

Layout under the workdir (local paths and gs:// alike):
  checkpoints/<step>/                 one Orbax checkpoint per saved step: the last max_to_keep,
                                      plus every multiple of keep_every_steps.
  checkpoints_unreadable/<step>/      checkpoints that failed to restore, moved aside (never
                                      deleted) once an older one restored, so that later saves
                                      cannot collide with them.
  checkpoints_best/<step>/            with training.eval_every > 0: the one checkpoint with the
                                      lowest value so far of the tracked metric (FID for images),
                                      its value stored with it (``BestCheckpointer``).
"""

import math
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from ddgan_jax.train_state import TrainState

CHECKPOINT_DIR = 'checkpoints'
UNREADABLE_DIR = 'checkpoints_unreadable'
BEST_DIR = 'checkpoints_best'


class NoCheckpointError(FileNotFoundError):
  """The workdir holds no checkpoint."""


def from_config(workdir: str, config: ml_collections.ConfigDict) -> 'Checkpointer':
  """The ``Checkpointer`` of ``workdir`` with the retention of ``config.checkpoint``."""
  return Checkpointer(workdir, config.checkpoint.max_to_keep, config.checkpoint.keep_every_steps)


class Checkpointer:
  """Saves and restores ``TrainState`` under ``workdir/checkpoints``.

  Attributes:
    directory: the checkpoint directory.
    manager: the underlying Orbax ``CheckpointManager`` (asynchronous saves).
  """

  def __init__(self, workdir: str, max_to_keep: int, keep_every_steps: int = 0):
    """Opens (creating it if needed) the checkpoint directory of ``workdir``.

    Args:
      workdir: the run's working directory; local or gs://.
      max_to_keep: how many of the newest checkpoints to keep.
      keep_every_steps: also keep, for good, the checkpoints whose step is a multiple of this;
        0 keeps no others.
    """
    self._workdir = epath.Path(workdir)
    self.directory = self._workdir / CHECKPOINT_DIR
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, keep_period=keep_every_steps or None, create=True
        ),
    )

  def save(self, state: TrainState) -> bool:
    """Starts saving ``state`` at its step (unless that step is already saved).

    Args:
      state: the state to save; its arrays are copied before this returns.

    Returns:
      Whether a save was started.
    """
    step = int(jax.device_get(state.step))
    if step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def reached_preemption(self, step: int) -> bool:
    """True on every process once a multi-host preemption notice has reached ``step``."""
    return self.manager.reached_preemption(step)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, target: Any) -> TrainState:
    """Restores the newest readable checkpoint, falling back to older ones with a warning.

    Args:
      target: a state (or one of ``jax.ShapeDtypeStruct`` with shardings) giving the structure,
        shapes, dtypes and shardings to restore into; its static fields are kept.

    Returns:
      The restored state.

    Raises:
      NoCheckpointError: when the directory holds no checkpoint.
      RuntimeError: when no checkpoint could be restored (nothing is moved or deleted then).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise NoCheckpointError(f'No checkpoint found in {self.directory}.')
    failures = []
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-exception-caught
        logging.warning('Checkpoint %d in %s is unreadable: %s: %s', step, self.directory,
                        type(e).__name__, e)
        failures.append((step, e))
        continue
      if failures:
        self._move_aside([s for s, _ in failures])
        logging.warning('Resumed from the older checkpoint %d; unreadable newer ones moved to %s.',
                        step, self._workdir / UNREADABLE_DIR)
      return restored
    details = '\n'.join(f'  step {s}: {type(e).__name__}: {e}' for s, e in failures)
    raise RuntimeError(
        f'None of the checkpoints in {self.directory} could be restored:\n{details}\n'
        'If the config changed since they were written (model, optimiser or dataset shapes), '
        'train in a new --workdir or restore the original config; nothing was modified.'
    )

  def restore_step(self, step: int, target: Any) -> TrainState:
    """Restores the checkpoint of ``step``, from the periodic ones or else from ``BEST_DIR``.

    Args:
      step: the checkpoint's step.
      target: as for ``restore_latest``.

    Raises:
      NoCheckpointError: neither directory holds ``step``; the message lists the steps of both.
    """
    if step in self.manager.all_steps():
      return self.manager.restore(step, args=ocp.args.StandardRestore(target))
    best_dir = self._workdir / BEST_DIR
    best_steps = []
    if best_dir.exists():
      with ocp.CheckpointManager(best_dir) as best:
        if step in best.all_steps():
          return best.restore(step, args=ocp.args.StandardRestore(target))
        best_steps = sorted(best.all_steps())
    raise NoCheckpointError(
        f'No checkpoint of step {step} in {self.directory}; it holds steps '
        f'{sorted(self.manager.all_steps())}, and {best_dir} holds {best_steps}. Pass one of '
        'them, or no step for the newest.'
    )

  def _move_aside(self, steps: list[int]) -> None:
    """Moves unreadable step directories to ``UNREADABLE_DIR`` (process 0 does the moving)."""
    if jax.process_index() == 0:
      aside = self._workdir / UNREADABLE_DIR
      aside.mkdir(parents=True, exist_ok=True)
      for step in steps:
        target = aside / str(step)
        suffix = 1
        while target.exists():
          target = aside / f'{step}.{suffix}'
          suffix += 1
        (self.directory / str(step)).rename(target)
    multihost_utils.sync_global_devices('ddgan_jax.checkpoints.move_aside')
    self.manager.reload()

  def wait_until_finished(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class BestCheckpointer:
  """Keeps the one checkpoint with the lowest value of a metric, under ``workdir/checkpoints_best``.

  The value is saved with the checkpoint (Orbax's metrics), so a resumed run compares new values
  against the best of the runs before it.

  Attributes:
    directory: the directory of the best checkpoint.
    metric: the metric's name.
  """

  def __init__(self, workdir: str, metric: str):
    """Opens (creating it if needed) the best checkpoint's directory of ``workdir``.

    Args:
      workdir: the run's working directory; local or gs://.
      metric: the name the value is saved under; a lower value is better.
    """
    self.directory = epath.Path(workdir) / BEST_DIR
    self.metric = metric
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics[metric], best_mode='min', create=True,
            # Its saves may overlap the periodic ones of the same step, whose processes meet at
            # barriers named after the step.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=BEST_DIR),
        ),
    )
    step = self._manager.best_step()
    self._best = None if step is None else (step, float(self._manager.metrics(step)[metric]))

  def best(self) -> tuple[int, float] | None:
    """(step, value) of the best checkpoint, or None before the first."""
    return self._best

  def save_if_better(self, state: TrainState, value: float) -> bool:
    """Starts saving ``state`` in place of the best checkpoint if ``value`` is lower than its.

    Args:
      state: the state ``value`` was measured on; its arrays are copied before this returns.
      value: the metric's value; NaN is never better.

    Returns:
      Whether a save was started.
    """
    if math.isnan(value) or (self._best is not None and not value < self._best[1]):
      return False
    step = int(jax.device_get(state.step))
    if step in self._manager.all_steps():
      return False
    self._best = (step, value)
    return self._manager.save(step, args=ocp.args.StandardSave(state),
                              metrics={self.metric: value}, force=True)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
