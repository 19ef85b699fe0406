"""Stacked-MNIST 32x32 (three MNIST digits as R, G, B; 1000 modes), T = 4.

The paper reports 1000/1000 modes and reverse KL 0.071; the official README gives no command, so
this uses the CIFAR-10 networks and optimiser with the small discriminator and no flips.
--mode=eval counts the modes of 26,000 samples with an MNIST classifier, trained on first use or
beforehand (README, "Mode coverage"):

    python -m ddgan_jax.main --config=configs/stackmnist.py --workdir=/tmp/ddgan_stackmnist
    python -m ddgan_jax.evaluation.mnist_classifier
    python -m ddgan_jax.main --workdir=/tmp/ddgan_stackmnist --mode=eval
"""

from configs import cifar10


def get_config():
  """Stacked-MNIST overrides of the CIFAR-10 configuration."""
  config = cifar10.get_config()
  config.data.dataset = 'stackmnist'
  config.data.random_flip = False
  config.training.batch_size = 256
  config.training.num_epochs = 1000
  config.eval.num_samples = 26_000
  return config
