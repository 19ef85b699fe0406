"""Tests of config.eval.per_level: the AUC, chains from real data, the 'levels' block, the check
and the device count."""

import json
from unittest import mock

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from ddgan_jax import diffusion
from ddgan_jax import evaluation
from ddgan_jax import sampling
from ddgan_jax.data import indexed
from ddgan_jax.evaluation import classifier as classifier_lib
from ddgan_jax.evaluation import common
from ddgan_jax.evaluation import digits
from ddgan_jax.evaluation import levels
from tests import runs
from tests.configs import tiny
from tests.configs import tiny_digits

SIZE = 16


def _digits_config(cache_dir):
  """tiny_digits at 16x16 (the size of the shared classifier) with T = 3, to compile fast."""
  config = tiny_digits.get_config()
  config.model.image_size = SIZE
  config.model.nf = 8
  config.model.ch_mult = (1,)
  config.model.attn_resolutions = ()
  config.diffusion.num_timesteps = 3
  config.eval.num_samples = 12
  config.eval.batch_size = 8
  config.eval.cache_dir = cache_dir
  config.eval.per_level = True
  return config


def test_auc_of_hand_computed_cases():
  assert levels.auc([2.0, 3.0], [0.0, 1.0, 1.5]) == 1.0
  assert levels.auc([0.0, 1.0, 1.5], [2.0, 3.0]) == 0.0
  assert levels.auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
  # (2, 1) right, (2, 2) twice half, (3, *) all three right: 5 of 6 pairs.
  assert levels.auc([2.0, 3.0], [1.0, 2.0, 2.0]) == pytest.approx(5 / 6, abs=1e-12)
  rng = np.random.default_rng(0)
  real, fake = rng.integers(0, 5, 40), rng.integers(0, 5, 30)  # Many ties.
  pairs = np.mean((real[:, None] > fake[None, :]) + 0.5 * (real[:, None] == fake[None, :]))
  assert levels.auc(real, fake) == pytest.approx(pairs, abs=1e-12)
  with pytest.raises(ValueError, match='needs real and fake'):
    levels.auc([], [1.0])


def test_chains_with_an_exact_generator_reproduce_the_real_digits_scores(
    digits_classifier_cache):
  config = _digits_config(digits_classifier_cache)
  config.diffusion.num_timesteps = 4
  train, heldout = digits.level_images(config)
  assert train.shape == (1797, SIZE, SIZE, 1) and heldout.shape == (360, SIZE, SIZE, 1)
  x0 = indexed.to_model_range(heldout)
  schedule = diffusion.schedule_from_config(config)

  # G predicts scale * the true x0, whatever x_{t+1}: exactly x0 at scale 1.
  run = jax.jit(lambda key, k, scale: levels.chain_from_level(
      key, schedule, lambda x, t, z: scale * x0, x0, k, config.model.nz))
  chains_of = lambda scale: {
      k: sampling.to_uint8(np.asarray(run(jax.random.PRNGKey(k), k, scale)), True)
      for k in (1, 2, 3)}
  chains = chains_of(1.0)
  for k in (1, 2, 3):
    np.testing.assert_array_equal(chains[k], heldout)
  blurred = chains_of(0.5)  # A wrong prediction shows: the chain does not copy its start.
  assert not any(np.array_equal(blurred[k], heldout) for k in (1, 2, 3))

  scores = digits.score_levels(config, chains)
  settings = classifier_lib.ClassifierSettings(image_size=SIZE)
  classifier = classifier_lib.load_or_train(settings, digits_classifier_cache)
  split = classifier_lib.digits_split(SIZE, settings.heldout_fraction, settings.seed)
  real = digits.digit_scores(split.heldout_images, split.train_images, classifier)
  assert sorted(scores) == [1, 2, 3]
  for s in scores.values():
    assert s['confident_fraction'] == real['confident_fraction'] >= 0.9
    assert s['class_histogram'] == real['class_histogram']
    assert s['reverse_kl'] == real['reverse_kl'] and s['num_images'] == 360
    assert s['frechet_distance'] == pytest.approx(0.0, abs=1e-6)  # Against themselves.


def test_per_level_eval_writes_every_level(tmp_path, digits_classifier_cache):
  config = _digits_config(digits_classifier_cache)
  runs.write_run(tmp_path, config, [5])
  with mock.patch.object(evaluation.logging, 'info') as info, mock.patch.object(
      common.metric_writers, 'create_default_writer') as writer:
    metrics = evaluation.evaluate(config, str(tmp_path))
  written = json.loads((tmp_path / 'eval' / 'metrics_step5.json').read_text())
  assert written == metrics
  block = metrics['levels']
  assert block['num_real'] == 12 and block['num_chains'] == 12
  assert list(block['discriminator']) == ['level_0', 'level_1', 'level_2']
  for level in block['discriminator'].values():
    assert set(level) == {'d_real', 'd_fake', 'auc', 'x0_error'}
    assert 0.0 <= level['auc'] <= 1.0 and level['x0_error'] > 0.0
  assert list(block['chains']) == ['from_level_1', 'from_level_2']
  for scores in block['chains'].values():
    assert set(scores) == set(metrics['samples']) and scores['num_images'] == 12
  scalars = writer.return_value.write_scalars.call_args[0][1]
  assert scalars['levels/discriminator/level_2/auc'] == block['discriminator']['level_2']['auc']
  assert 'levels/chains/from_level_2/confident_fraction' in scalars
  line = info.call_args[0][3]
  assert '\nPer level: D AUC ' in line and 'x_2 ' in line and '(n=12)' in line


def test_per_level_fails_at_startup_for_a_family_without_it(tmp_path):
  config = tiny.get_config()
  config.eval.per_level = True
  with pytest.raises(ValueError, match="dataset='toy2d' have no per-level part; those of "
                     "'digits' do"):
    evaluation.evaluate(config, str(tmp_path))  # No checkpoint: it fails before reading one.


@pytest.mark.slow  # It compiles the networks once more, for one device.
def test_per_level_numbers_do_not_depend_on_the_device_count(tmp_path, digits_classifier_cache):
  config = _digits_config(digits_classifier_cache)
  runs.write_run(tmp_path, config, [5])
  train, heldout = digits.level_images(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), ('data',))
    state = sampling.restore_state(config, str(tmp_path), mesh)
    results.append((levels.discriminator_levels(config, state, train[:12], mesh),
                    levels.chains_from_levels(config, state, heldout[:12], mesh)))
  (d1, chains1), (d8, chains8) = results
  assert list(d1) == list(d8) == ['level_0', 'level_1', 'level_2']
  for name, level in d1.items():
    for key, value in level.items():
      assert value == pytest.approx(d8[name][key], abs=1e-5), (name, key)
  assert sorted(chains1) == sorted(chains8) == [1, 2]
  for k, samples in chains1.items():
    difference = np.abs(samples.astype(int) - chains8[k].astype(int))
    assert difference.max() <= 1 and np.mean(difference == 0) > 0.99  # Float rounding only.
