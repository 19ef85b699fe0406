"""2-D mixture of 25 Gaussians, T = 4: the paper's mode-coverage experiment, CPU-sized.

MLP generator and discriminator on raw 2-D points (the grid {-4, -2, 0, 2, 4}^2, std 0.05);
60,000 steps take about 5 minutes on 2 CPU cores (~200 steps/s). Train, then score the EMA
generator (writes DIR/eval/metrics_step<N>.json and DIR/eval/scatter_step<N>.png):

    python -m ddgan_jax.main --config=configs/toy2d.py --workdir=DIR
    python -m ddgan_jax.main --config=configs/toy2d.py --workdir=DIR --mode=eval

Other step counts and seeds: --config.diffusion.num_timesteps=8 --config.seed=1; the 8-Gaussian
ring: --config.data.toy=8gaussians. ``launch/toy2d_sweep.sh`` runs T = 1, 2, 4, 8 over 3 seeds.
"""

from configs import default


def get_config():
  """Toy-data overrides of the default configuration."""
  config = default.get_config()
  config.seed = 0

  model = config.model
  model.generator = 'mlp'
  model.discriminator = 'mlp'
  model.num_channels = 2
  model.mlp_hidden = 128
  model.mlp_layers = 3
  model.nz = 16
  model.t_emb_dim = 32

  config.diffusion.num_timesteps = 4

  config.data.dataset = 'toy2d'
  config.data.toy = '25gaussians'

  training = config.training
  training.batch_size = 256
  training.num_steps = 60_000
  training.r1_gamma = 0.05
  training.lazy_reg = 1  # R1 every step: it is cheap on 2-D inputs.
  training.log_every = 1000
  training.sample_every = 20_000

  optim = config.optim
  optim.lr_g = 5e-4
  optim.lr_d = 5e-4
  optim.lr_decay = False  # Constant learning rates; the EMA generator is the one evaluated.
  optim.ema_decay = 0.9995

  config.checkpoint.every_steps = 20_000
  config.sampling.num_images = 2500
  config.sampling.batch_size = 500
  config.sampling.grid_images = 2500
  return config
