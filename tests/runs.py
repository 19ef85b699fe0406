"""Workdirs for tests: written without training (random weights in checkpoints of chosen steps),
or through the command line (``run_cli``)."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ddgan_jax import checkpoints
from ddgan_jax import models
from ddgan_jax import run_config
from ddgan_jax import train_state as train_state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(args, devices=8, check=True) -> subprocess.CompletedProcess:
  """Runs ``python -m ddgan_jax.main ARGS`` from the repository root on ``devices`` CPU devices.

  With ``check``, asserts that it succeeded, showing the end of its stderr otherwise.
  """
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.run([sys.executable, '-m', 'ddgan_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def random_state(config) -> train_state_lib.TrainState:
  """A state of ``config``'s shapes with fan-in scaled normal weights, built without compiling.

  Initialising the networks compiles for a minute on a busy 2-core machine; numpy takes no time.
  """
  abstract = train_state_lib.abstract_train_state(
      config, models.build_generator(config), models.build_discriminator(config), 1)
  rs = np.random.RandomState(config.seed)

  def fill(path, leaf):
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rs.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    ones = jax.tree_util.keystr(path).endswith("['scale']")
    return jnp.full(leaf.shape, 1.0 if ones else 0.0, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def write_run(workdir: pathlib.Path, config, steps) -> dict[int, dict]:
  """A workdir with config.json and checkpoints of ``steps``, each with its own EMA weights.

  Returns:
    step -> the EMA parameters saved at that step.
  """
  state = random_state(config)
  run_config.record(config, str(workdir), has_checkpoints=False)
  ckpt = checkpoints.from_config(str(workdir), config)
  saved = {}
  for step in steps:
    ema = jax.tree.map(lambda p, s=step: p * (1.0 + 0.1 * s), state.g_params)
    ckpt.save(state.replace(step=jnp.asarray(step, jnp.int32), ema_params=ema))
    saved[step] = ema
  ckpt.wait_until_finished()
  ckpt.close()
  return saved
