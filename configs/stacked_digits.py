"""Stacked digits: three of scikit-learn's digits as R, G, B at 16x16 (1,000 modes, no download),
Stacked-MNIST at laptop size. The digits quickstart's networks and optimiser, T = 4.

10,000 steps: about 22 minutes on 2 idle CPU cores (7.8 steps/s, measured 2026-11-25), plus
compilation. --mode=eval counts the modes of 26,000 EMA samples with the digits classifier, and of
as many real stacks (README, "Mode coverage", which has the T = 1 vs T = 4 table):

    python -m ddgan_jax.main --config=configs/stacked_digits.py --workdir=/tmp/ddgan_stacked
    python -m ddgan_jax.main --workdir=/tmp/ddgan_stacked --mode=eval

T = 1 (a one-step conditional GAN) against T = 4, seeds 0, 1 and 2, with a table at the end:

    TIMESTEPS="1 4" launch/timestep_sweep.sh configs/stacked_digits.py /tmp/ddgan_stacked_sweep
"""

from configs import digits


def get_config():
  """Stacked-digits overrides of the digits configuration."""
  config = digits.get_config()
  config.model.num_channels = 3
  config.data.dataset = 'stacked_digits'
  config.training.num_steps = 10_000
  # The digits quickstart moved to batch 8 on 2026-12-03; this config's results were measured at 32.
  config.training.batch_size = 32
  # The README's T = 1 / T = 4 table was measured with one D step per G step, before the digits
  # quickstart took five; with five, the digits networks ran 2.85 steps/s against 6.1 with one
  # (2026-12-02), so 10,000 steps would take over 58 minutes instead of under 30.
  config.training.d_steps = 1
  config.checkpoint.every_steps = 1000
  config.eval.num_samples = 26_000
  return config
