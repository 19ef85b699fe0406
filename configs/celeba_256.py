"""CelebA-HQ 256x256, T = 2 (FID 7.64 in the paper).

Official setting: 8 devices x 4 images (global batch 32), 800 epochs on the 27,000 training
images. TFDS needs a manual download of CelebA-HQ; the error message says what to put where.

    python -m ddgan_jax.main --config=configs/celeba_256.py --workdir=/tmp/ddgan_celeba_256
"""

from configs import default


def get_config():
  """CelebA-HQ 256 overrides of the default configuration."""
  config = default.get_config()
  model = config.model
  model.image_size = 256
  model.nf = 64
  model.ch_mult = (1, 1, 2, 2, 4, 4)
  model.n_mlp = 3
  model.discriminator = 'large'
  config.diffusion.num_timesteps = 2
  config.training.batch_size = 32
  config.training.num_epochs = 800
  config.training.num_steps = -1
  config.training.r1_gamma = 2.0
  config.training.lazy_reg = 10
  config.training.sample_every = 5000
  config.optim.lr_d = 1e-4
  config.optim.lr_g = 2e-4
  config.data.dataset = 'celeba_hq_256'
  config.data.num_examples = 27_000
  config.checkpoint.every_steps = 5000
  config.sampling.batch_size = 16
  return config
