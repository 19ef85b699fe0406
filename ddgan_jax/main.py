r"""Command line for DDGAN: train, sample or evaluate.

  python -m ddgan_jax.main --config=configs/cifar10.py --workdir=DIR [--mode=train|sample|eval]
      [--config.training.batch_size=256 ...] [--distributed]

Training saves the resolved config as DIR/config.json on its first run and resumes from the
newest checkpoint in --workdir. Every mode then works without --config, from the saved one;
--config=configs/saved.py:DIR takes the saved one with --config.* overrides. A --config that
contradicts the saved architecture fails, naming the fields (ddgan_jax/run_config.py).
--mode=sample streams config.sampling.num_images EMA samples to DIR/samples/
(ddgan_jax/sample_files.py); --mode=eval scores the newest checkpoint with the metrics of its
dataset (the 2-D toy data or the digits; see ddgan_jax/evaluation) and writes
DIR/eval/metrics_step<N>.json.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from ddgan_jax import evaluation
from ddgan_jax import run_config
from ddgan_jax import sample_files
from ddgan_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Configuration file; optional once the workdir holds config.json.',
    lock_config=True
)
flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, summaries and samples (gs:// works).'
)
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval'], 'What to do with the workdir.')
flags.DEFINE_bool(
    'distributed', False,
    'Call jax.distributed.initialize() first: set on every process of a multi-process run '
    '(multi-host TPU VM, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).'
)
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info('JAX process %d of %d; local devices: %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  config = run_config.resolve(FLAGS.config, FLAGS.workdir)
  if FLAGS.mode == 'train':
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'sample':
    sample_files.sample_and_save(config, FLAGS.workdir)
  else:
    evaluation.evaluate(config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
