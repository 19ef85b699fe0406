r"""Command line for DDGAN: train, sample or evaluate.

  python -m ddgan_jax.main --config=configs/cifar10.py --workdir=DIR [--mode=train|sample|eval]
      [--config.training.batch_size=256 ...]
      [--distributed | --coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Training saves the resolved config as DIR/config.json on its first run and resumes from the
newest checkpoint in --workdir. Every mode then works without --config, from the saved one;
--config=configs/saved.py:DIR takes the saved one with --config.* overrides. A --config that
contradicts the saved architecture fails, naming the fields (ddgan_jax/run_config.py).
--mode=sample streams config.sampling.num_images EMA samples to DIR/samples/
(ddgan_jax/sample_files.py); --mode=eval scores the newest checkpoint with the metrics of its
dataset (2-D toy modes, digits, stacked-digit or Stacked-MNIST modes, or FID and the other
Inception metrics; see ddgan_jax/evaluation) and writes DIR/eval/metrics_step<N>.json.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from ddgan_jax import compilation
from ddgan_jax import distributed
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
    'Join a multi-process run, detecting it from a TPU VM slice or SLURM. Set on every process. '
    'Elsewhere give --coordinator_address, --num_processes and --process_id instead.'
)
flags.DEFINE_string(
    'coordinator_address', None,
    'HOST:PORT of process 0 in a multi-process run (default: $JAX_COORDINATOR_ADDRESS). '
    'Needs --num_processes and --process_id too.'
)
flags.DEFINE_integer('num_processes', None,
                     'Processes in a multi-process run (default: $JAX_NUM_PROCESSES).')
flags.DEFINE_integer('process_id', None,
                     'This process, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID).')
flags.DEFINE_integer(
    'heartbeat_timeout_s', 100,
    'Multi-process runs: seconds after which a silent process counts as dead and the others stop.'
)
flags.DEFINE_integer(
    'join_timeout_s', 300,
    'Multi-process runs: seconds to wait at start-up for every process to join before aborting.'
)
flags.DEFINE_string(
    'compilation_cache_dir', None,
    "JAX's persistent compilation cache, so that a resumed or repeated run skips compilation. "
    f"Default: $JAX_COMPILATION_CACHE_DIR, else {compilation.DEFAULT_CACHE_DIR}; '' turns it off."
)
flags.mark_flags_as_required(['workdir'])


@distributed.exit_all_on_error()
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize(distributed.resolve(
      FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
      os.environ, FLAGS.heartbeat_timeout_s, FLAGS.join_timeout_s))
  compilation.enable_persistent_cache(FLAGS.compilation_cache_dir)
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
