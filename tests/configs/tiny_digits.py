"""A tiny NCSN++ / small-discriminator config on the embedded 8x8 digits, for CLI tests."""

from configs import default


def get_config():
  """Returns the default config shrunk to a few-second CPU run on scikit-learn's digits."""
  config = default.get_config()
  config.seed = 0
  config.model.image_size = 8
  config.model.num_channels = 1
  config.model.nf = 16
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = (4,)
  config.model.nz = 8
  config.model.z_emb_dim = 16
  config.model.n_mlp = 2
  config.model.ngf = 8
  config.model.t_emb_dim = 16
  config.data.dataset = 'digits'
  config.data.random_flip = False
  config.training.batch_size = 8
  config.training.num_steps = 4
  config.training.num_epochs = 10
  config.training.lazy_reg = 2
  config.training.log_every = 2
  config.training.sample_every = 4
  # A normally initialised output layer (the official one starts at scale 0), large steps and a
  # short EMA, so that the samples are far from flat grey and 4 steps visibly change them.
  config.model.init_scale = 1.0
  config.optim.lr_g = 2e-3
  config.optim.lr_d = 2e-3
  config.optim.ema_decay = 0.5
  config.checkpoint.every_steps = 2
  config.sampling.num_images = 12
  config.sampling.batch_size = 8
  config.sampling.grid_images = 8
  return config
