"""Mode counting on stacked digits: known answers, real stacks, and --mode=eval end to end."""

import itertools
import json
import math

import numpy as np
import pytest

from configs import stacked_digits as stacked_digits_config
from ddgan_jax import evaluation
from ddgan_jax import train
from ddgan_jax.data import local
from ddgan_jax.evaluation import classifier as classifier_lib
from ddgan_jax.evaluation import modes
from ddgan_jax.evaluation import stacked_digits
from tests import runs

SIZE = 16
ALL_TRIPLES = np.array(list(itertools.product(range(10), repeat=3)))


def test_mode_index_spells_the_three_digits():
  np.testing.assert_array_equal(modes.mode_index([[1, 2, 3], [0, 0, 0], [9, 9, 9], [0, 5, 0]]),
                                [123, 0, 999, 50])
  np.testing.assert_array_equal(modes.mode_index(ALL_TRIPLES), np.arange(1000))
  np.testing.assert_array_equal(modes.mode_index([[1, 0, 1, 1]], num_classes=2), [11])
  with pytest.raises(ValueError, match=r'in \[0, 10\)'):
    modes.mode_index([[1, 10, 3]])


def test_every_mode_once_covers_1000_with_zero_kl():
  confident = np.ones((1000, 3), bool)
  metrics = modes.mode_metrics(ALL_TRIPLES, confident)
  assert (metrics['modes_covered'], metrics['num_modes'], metrics['num_samples']) == (1000, 1000,
                                                                                      1000)
  assert metrics['reverse_kl'] == pytest.approx(0.0, abs=1e-12)
  assert metrics['mode_counts'] == [1] * 1000 and metrics['confident_fraction'] == 1.0
  json.dumps(metrics)


def test_collapse_onto_10_modes():
  # 2,600 samples spread evenly over the 10 modes d d d: KL = ln(1000 / 10).
  labels = np.repeat(np.arange(10), 260)[:, None].repeat(3, axis=1)
  confident = np.ones_like(labels, bool)
  confident[:650, 1] = False  # A quarter has an unconfident middle digit.
  metrics = modes.mode_metrics(labels, confident)
  assert metrics['modes_covered'] == 10
  assert metrics['reverse_kl'] == pytest.approx(math.log(100), rel=1e-12)
  assert metrics['confident_fraction'] == pytest.approx(0.75)
  assert [i for i, c in enumerate(metrics['mode_counts']) if c] == [111 * d for d in range(10)]


def test_skewed_histogram_matches_the_hand_computed_kl():
  # Every mode once, plus 1,000 more of mode 000: p(000) = 1001/2000 = 0.5005, each other mode
  # 1/2000 = 0.0005. KL = 0.5005 ln(1000 * 0.5005) + 999 * 0.0005 ln(1000 * 0.0005)
  #                    = 0.5005 ln 500.5 + 0.4995 ln 0.5 = 3.110912 - 0.346227 = 2.764685.
  labels = np.concatenate([ALL_TRIPLES, np.zeros((1000, 3), int)])
  metrics = modes.mode_metrics(labels, np.ones_like(labels, bool))
  assert metrics['modes_covered'] == 1000 and metrics['mode_counts'][0] == 1001
  expected = 0.5005 * math.log(500.5) + 0.4995 * math.log(0.5)
  assert metrics['reverse_kl'] == pytest.approx(expected, rel=1e-12)
  assert metrics['reverse_kl'] == pytest.approx(2.764685, abs=1e-6)


def test_stacked_scores_classify_each_channel_in_order():
  # Channel value 20 d + 5 stands for digit d; the fake classifier gives it probability 0.95,
  # except for value 25 (digit 1), which it is unsure of (0.5).
  digits = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]])
  images = np.broadcast_to((20 * digits + 5).astype(np.uint8)[:, None, None, :], (4, 2, 2, 3))

  def predict(channel):
    assert channel.shape == (4, 2, 2, 1) and channel.dtype == np.uint8
    d = (channel[:, 0, 0, 0] - 5) // 20
    probs = np.full((len(d), 10), 0.05 / 9)
    probs[np.arange(len(d)), d] = np.where(d == 1, 0.5, 0.95)
    return probs

  metrics = modes.stacked_scores(images, predict, confidence=0.9)
  assert [i for i, c in enumerate(metrics['mode_counts']) if c] == [0, 123, 456, 789]
  assert metrics['confident_fraction'] == 0.75 and metrics['modes_covered'] == 4


@pytest.fixture(scope='module')
def classifier(digits_classifier_cache):
  return classifier_lib.load_or_train(classifier_lib.ClassifierSettings(image_size=SIZE),
                                      digits_classifier_cache)


def test_real_stacked_digits_cover_all_1000_modes(classifier):
  images, labels = local.stacked_digits_source(stacked_digits_config.get_config()).load(
      np.arange(26_000))
  probs = np.stack([classifier.predict(images[..., c:c + 1])[0] for c in range(3)], axis=1)
  assert np.mean(modes.mode_index(probs.argmax(axis=-1)) == labels) >= 0.95
  metrics = modes.mode_metrics(probs.argmax(axis=-1), probs.max(axis=-1) >= 0.9)
  assert metrics['modes_covered'] == 1000
  # Multinomial noise alone gives about (1000 - 1) / (2 * 26000) = 0.019.
  assert metrics['reverse_kl'] < 0.03
  assert metrics['confident_fraction'] > 0.8


def _eval_config(cache_dir):
  """The stacked-digits config with a one-level network and T = 1: quick to compile and sample."""
  config = stacked_digits_config.get_config()
  config.model.nf = 8
  config.model.ch_mult = (1,)
  config.model.nz = 8
  config.model.z_emb_dim = 16
  config.model.ngf = 8
  config.model.t_emb_dim = 16
  config.model.init_scale = 1.0
  config.diffusion.num_timesteps = 1
  config.training.batch_size = 8
  config.training.num_steps = 2
  config.training.log_every = 1
  config.checkpoint.every_steps = 2
  config.eval.num_samples = 40
  config.eval.batch_size = 16
  config.eval.cache_dir = cache_dir
  return config


def _check_written(workdir, metrics, step):
  written = json.loads((workdir / 'eval' / f'metrics_step{step}.json').read_text())
  assert written == metrics
  assert metrics['step'] == step and metrics['dataset'] == 'stacked_digits'
  assert metrics['num_samples'] == 40 and metrics['num_timesteps'] == 1
  for part in ('samples', 'real'):
    assert set(metrics[part]) == {'modes_covered', 'num_modes', 'reverse_kl',
                                  'confident_fraction', 'mode_counts', 'num_samples'}
    assert metrics[part]['num_samples'] == 40 and sum(metrics[part]['mode_counts']) == 40
  assert metrics['real']['modes_covered'] >= 35  # 40 real stacks rarely share a mode.
  assert metrics['real']['confident_fraction'] >= 0.8
  assert metrics['classifier']['heldout_accuracy'] >= 0.97
  assert list((workdir / 'eval').glob('events.out.tfevents.*'))
  assert '/1000 modes covered' in stacked_digits.summary(metrics)


def test_eval_of_a_stacked_digits_checkpoint_writes_all_fields(tmp_path, digits_classifier_cache):
  config = _eval_config(digits_classifier_cache)
  assert evaluation.family_for('stacked_digits') is stacked_digits
  runs.write_run(tmp_path, config, [0])
  _check_written(tmp_path, evaluation.evaluate(config, str(tmp_path)), 0)
  config.model.num_channels = 1
  with pytest.raises(ValueError, match='3 channels'):
    evaluation.evaluate(config, str(tmp_path))


@pytest.mark.slow  # Compiling the training step takes minutes on 2 shared cores.
def test_eval_after_a_few_training_steps_on_stacked_digits(tmp_path, digits_classifier_cache):
  config = _eval_config(digits_classifier_cache)
  train.train_and_evaluate(config, str(tmp_path))
  _check_written(tmp_path, evaluation.evaluate(config, str(tmp_path)), 2)


def test_training_metric_is_the_scored_reverse_kl(digits_classifier_cache):
  config = _eval_config(digits_classifier_cache)
  images, _ = local.stacked_digits_source(config).load(np.arange(300))
  name, reverse_kl = stacked_digits.training_metric(config, None)
  scored = stacked_digits.score(config, images, None, 0)['samples']['reverse_kl']
  assert name == 'reverse_kl' and scored > 0.0
  assert reverse_kl(images) == pytest.approx(scored, rel=1e-12)
  assert reverse_kl(np.repeat(images[:1], 300, axis=0)) == pytest.approx(math.log(1000))
