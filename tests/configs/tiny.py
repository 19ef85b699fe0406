"""A tiny 2-D toy config (MLP networks) for fast training, resume and CLI tests."""

from configs import default


def get_config():
  """Returns the default config shrunk to seconds-long CPU runs on the toy data."""
  config = default.get_config()
  config.seed = 0
  config.model.generator = 'mlp'
  config.model.discriminator = 'mlp'
  config.model.num_channels = 2
  config.model.mlp_hidden = 32
  config.model.mlp_layers = 2
  config.model.nz = 8
  config.model.t_emb_dim = 16
  config.data.dataset = 'toy2d'
  config.data.toy = '25gaussians'
  config.training.batch_size = 16
  config.training.num_steps = 6
  config.training.num_epochs = 10
  config.training.lazy_reg = 2
  config.training.log_every = 2
  config.training.sample_every = 3
  config.optim.ema_decay = 0.9
  config.checkpoint.every_steps = 3
  config.checkpoint.max_to_keep = 3
  config.sampling.num_images = 40
  config.sampling.batch_size = 16
  config.sampling.grid_images = 16
  return config
