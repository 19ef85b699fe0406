"""LSUN Church 256x256, T = 4 (FID 5.25 in the paper).

Official setting: 8 devices x 8 images (global batch 64), 500 epochs on the first 120,000
church_outdoor training images.

    python -m ddgan_jax.main --config=configs/lsun_church.py --workdir=/tmp/ddgan_lsun_church
"""

from configs import celeba_256


def get_config():
  """LSUN Church overrides of the CelebA-HQ 256 configuration (same networks)."""
  config = celeba_256.get_config()
  config.diffusion.num_timesteps = 4
  config.training.batch_size = 64
  config.training.num_epochs = 500
  config.training.r1_gamma = 1.0
  config.optim.lr_d = 1e-4
  config.optim.lr_g = 1.6e-4
  config.optim.ema_decay = 0.999
  config.data.dataset = 'lsun_church'
  config.data.num_examples = 120_000
  return config
