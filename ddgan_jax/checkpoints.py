"""Orbax checkpoints of the training state, with fallback past unreadable newest checkpoints.

Layout under the workdir (local paths and gs:// alike):
  checkpoints/<step>/                 one Orbax checkpoint per saved step: the last max_to_keep,
                                      plus every multiple of keep_every_steps.
  checkpoints_unreadable/<step>/      checkpoints that failed to restore, moved aside (never
                                      deleted) once an older one restored, so that later saves
                                      cannot collide with them.
"""

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
