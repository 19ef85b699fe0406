"""Evaluation during training: the tracked metric every eval_every steps, logged, compiled once,
and the best checkpoint, kept across a resume and restored by its step."""

from clu import metric_writers
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest
import tensorflow as tf

from ddgan_jax import checkpoints
from ddgan_jax import compilation
from ddgan_jax import evaluation
from ddgan_jax import models
from ddgan_jax import sampling
from ddgan_jax import train
from ddgan_jax import train_state as train_state_lib
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import during_training
from ddgan_jax.evaluation import image_metrics
from ddgan_jax.evaluation import toy2d
from tests import inception_fixture
from tests.configs import tiny

_REAL_TRAINING_METRIC = toy2d.training_metric


def _config(num_steps):
  config = tiny.get_config()
  config.training.num_steps = num_steps
  config.training.eval_every = 2
  config.checkpoint.max_to_keep = 1
  config.eval.num_samples_train = 20
  config.eval.batch_size = 16
  return config


def _script(monkeypatch, values):
  """Makes the toy metric return ``values`` in turn; returns the list of samples it scored."""
  scored = []

  def training_metric(config, mesh):
    del config, mesh

    def metric(samples):
      scored.append(samples)
      return values[len(scored) - 1]

    return 'reverse_kl', metric

  monkeypatch.setattr(toy2d, 'training_metric', training_metric)
  return scored


def _logged(workdir, tag):
  """step -> value of a scalar in the training's TensorBoard files."""
  out = {}
  for path in sorted(workdir.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


def _best_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints_best').iterdir())


def test_best_checkpoint_is_kept_across_a_resume_and_restored_by_step(monkeypatch, tmp_path):
  scored = _script(monkeypatch, [3.0, 1.0, 2.0])
  with compilation.CompileCounter() as counter:
    train.train_and_evaluate(_config(4), str(tmp_path))
  # Grid sampler and evaluation sampler: one program each, for two evaluations.
  assert counter.counts['jit(sample_batch)'] == 2, counter.counts
  assert _best_steps(tmp_path) == [4]
  # Resumed: 2.0 at step 6 is worse than the stored 1.0.
  config = _config(6)
  train.train_and_evaluate(config, str(tmp_path))
  assert _best_steps(tmp_path) == [4]
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [6]
  assert _logged(tmp_path, 'eval/reverse_kl') == {2: 3.0, 4: 1.0, 6: 2.0}
  assert set(_logged(tmp_path, 'eval/sampling_seconds_per_100')) == {2, 4, 6}
  kept = checkpoints.BestCheckpointer(str(tmp_path), 'reverse_kl')
  assert kept.best() == (4, 1.0)
  kept.close()

  mesh = sampling.make_mesh()
  best = sampling.restore_state(config, str(tmp_path), mesh, 4)
  assert int(best.step) == 4
  # What was scored at step 4: the first num_samples_train samples of --mode=eval's stream.
  expected, _ = common.draw_samples(config, common.make_batch_fn(config, mesh),
                                    best.generator_variables(ema=True), 20)
  np.testing.assert_array_equal(scored[1], expected)
  assert not np.array_equal(scored[0], scored[1])
  assert _REAL_TRAINING_METRIC(config, mesh)[1](expected) == toy2d.mode_metrics(
      expected, config.data.toy)['reverse_kl']

  # --mode=eval scores the best checkpoint by its step and records what it measured on.
  config.eval.step = 4
  config.eval.num_samples = 40
  metrics = evaluation.evaluate(config, str(tmp_path))
  assert metrics['step'] == 4 and metrics['num_samples'] == 40 and metrics['num_timesteps'] == 4
  assert metrics['sampling_seconds_per_100'] > 0 and metrics['device_count'] == jax.device_count()
  assert 'image_format' not in metrics  # Toy points are not images.


def test_unsupported_settings_fail_before_training(tmp_path):
  config = _config(2)
  config.data.dataset = 'mnist'
  with pytest.raises(ValueError, match="supports 'toy2d', 'digits'"):
    during_training.Evaluator(config, str(tmp_path), sampling.make_mesh(), None)
  config = _config(2)
  config.eval.num_samples_train = 1
  with pytest.raises(ValueError, match='num_samples_train must be at least 2'):
    train.train_and_evaluate(config, str(tmp_path))
  config = _config(2)
  config.training.eval_every = -1
  with pytest.raises(ValueError, match='eval_every must be >= 0'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not list((tmp_path / 'checkpoints').iterdir())


@pytest.mark.slow  # Two scipy square roots of 2048 x 2048 matrices: minutes on 2 shared cores.
def test_fid_of_an_image_generator_is_the_same_on_one_and_eight_devices(monkeypatch, tmp_path):
  config = inception_fixture.tiny_image_config(tmp_path, str(tmp_path / 'cache'))
  config.eval.num_samples_train = 12
  scored = []
  real_metric = image_metrics.training_metric

  def recorded_metric(config, mesh):
    name, metric = real_metric(config, mesh)

    def record_and_score(samples):
      scored.append(common.on_host(samples))  # Each on its own mesh's devices.
      return metric(samples)

    return name, record_and_score

  monkeypatch.setattr(image_metrics, 'training_metric', recorded_metric)
  state = train_state_lib.create_train_state(jax.random.PRNGKey(0), config,
                                             models.build_generator(config),
                                             models.build_discriminator(config), 16)
  writer = metric_writers.create_default_writer(str(tmp_path), just_logging=True)
  values = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), ('data',))
    evaluator = during_training.Evaluator(config, str(tmp_path / str(len(devices))), mesh, writer)
    values.append(evaluator(jax.device_put(state, NamedSharding(mesh, P())), 0))
    evaluator.close()
  assert evaluator.metric == 'fid' and values[0] > 0
  assert scored[0].std() > 20  # Far from flat grey.
  assert np.abs(scored[0].astype(int) - scored[1].astype(int)).max() <= 1
  # 12 samples in 2048 dimensions: the square root of a singular product magnifies the rounding
  # (measured: 469.011 and 468.929).
  assert values[1] == pytest.approx(values[0], rel=1e-3)


def test_every_family_can_be_tracked_during_training():
  for dataset, family in evaluation.FAMILIES.items():
    for name in ('check_config', 'score', 'summary', 'training_metric'):
      assert callable(getattr(family, name, None)), f'{dataset}: {family.__name__}.{name}'


def test_every_process_takes_process_zero_value_bit_for_bit(monkeypatch):
  assert common.process_zero_value(0.25) == 0.25  # One process: the value itself.
  theirs = 0.1 + 1e-12  # Not a float32: a float32 broadcast would round it.
  sent = []

  def broadcast(words):
    sent.append(words)
    return np.array([theirs]).view(np.int32)

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(common.multihost_utils, 'broadcast_one_to_all', broadcast)
  assert common.process_zero_value(0.3) == theirs
  assert sent[0].dtype == np.int32 and sent[0].view(np.float64)[0] == 0.3
