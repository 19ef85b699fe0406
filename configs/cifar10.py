"""CIFAR-10 32x32, T = 4: the paper's main configuration (FID 3.75 in the paper).

Official setting: 4 devices x 64 images (global batch 256), 1800 epochs.

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
  return config
