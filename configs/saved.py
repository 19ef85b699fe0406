"""The config a run saved in its workdir, to override fields of it from the command line.

    python -m ddgan_jax.main --workdir=DIR --mode=sample \
        --config=configs/saved.py:DIR --config.sampling.num_images=50000

Without overrides, leave --config out: every mode then reads DIR/config.json itself.
"""

from ddgan_jax import run_config


def get_config(workdir: str):
  """Returns the config saved in ``workdir``; fails when it has none."""
  config = run_config.load(workdir)
  if config is None:
    raise ValueError(f'{run_config.path(workdir)} does not exist: train or convert into '
                     f'{workdir} first, or pass the config file the run was trained with.')
  return config
