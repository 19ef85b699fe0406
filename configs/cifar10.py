"""CIFAR-10 32x32, T = 4: the paper's main configuration (FID 3.75 in the paper).

Official setting: 4 devices x 64 images (global batch 256), 1800 epochs (351,000 steps). FID on
10,000 EMA samples every 10,000 steps (35 times in the run; each costs about as much compute as
30 training steps) keeps the best checkpoint in checkpoints_best/.

    python -m ddgan_jax.main --config=configs/cifar10.py --workdir=/tmp/ddgan_cifar10
"""

from configs import default


def get_config():
  """CIFAR-10 overrides of the default configuration."""
  config = default.get_config()
  config.data.dataset = 'cifar10'
  config.training.batch_size = 256
  config.training.num_steps = -1  # num_epochs full epochs.
  config.training.sample_every = 5000
  config.checkpoint.every_steps = 5000
  config.training.eval_every = 10_000
  config.eval.num_samples_train = 10_000
  return config
