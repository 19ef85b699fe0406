"""Tests of the 2-D toy mixtures, their mode-coverage metrics and the scatter plot."""

import json
import math

import jax
import numpy as np
from PIL import Image
import pytest

from configs import toy2d as toy2d_config
from ddgan_jax import checkpoints
from ddgan_jax import evaluation
from ddgan_jax import input_pipeline
from ddgan_jax import models
from ddgan_jax import toy2d
from ddgan_jax import train_state
from ddgan_jax.evaluation import toy2d as toy2d_eval
from tests.configs import tiny

GRID = '25gaussians'
RING = '8gaussians'


def _at_modes(name: str, counts: list[int], offset: float = 0.0) -> np.ndarray:
  """counts[k] points at centre k, each shifted by ``offset`` along x."""
  centers = toy2d.get_mixture(name).centers
  points = np.repeat(centers, counts, axis=0)
  return points + np.array([offset, 0.0], np.float32)


def test_grid_and_ring_geometry():
  grid = toy2d.get_mixture(GRID)
  assert grid.centers.shape == (25, 2) and grid.std == 0.05
  assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
  assert len({tuple(c) for c in grid.centers.tolist()}) == 25
  ring = toy2d.get_mixture(RING)
  assert ring.centers.shape == (8, 2) and ring.std == 0.02
  np.testing.assert_allclose(np.linalg.norm(ring.centers, axis=1), 2.0, rtol=1e-6)
  np.testing.assert_allclose(ring.centers[2], [0.0, 2.0], atol=1e-6)


def test_every_mode_exactly_covered():
  m = toy2d_eval.mode_metrics(_at_modes(GRID, [100] * 25), GRID)
  assert m['modes_covered'] == 25 and m['num_modes'] == 25
  assert m['high_quality_fraction'] == 1.0
  assert m['reverse_kl'] == pytest.approx(0.0, abs=1e-12)
  assert m['mode_counts'] == [100] * 25 and m['num_samples'] == 2500


@pytest.mark.parametrize('k', [1, 5, 24])
def test_samples_in_only_k_modes(k):
  counts = [10] * k + [0] * (25 - k)
  m = toy2d_eval.mode_metrics(_at_modes(GRID, counts), GRID)
  assert m['modes_covered'] == k
  assert m['high_quality_fraction'] == 1.0
  # Uniform over k of the 25 modes: KL = log(25 / k).
  assert m['reverse_kl'] == pytest.approx(math.log(25 / k), rel=1e-9)


def test_half_the_samples_off_mode():
  on_mode = _at_modes(GRID, [4] * 25)
  off_mode = _at_modes(GRID, [4] * 25, offset=1.0)  # Halfway between two columns of modes.
  m = toy2d_eval.mode_metrics(np.concatenate([on_mode, off_mode]), GRID)
  assert m['high_quality_fraction'] == 0.5
  assert m['modes_covered'] == 25
  assert m['reverse_kl'] == pytest.approx(0.0, abs=1e-12)


def test_three_sigma_boundary():
  just_inside = _at_modes(GRID, [1] * 25, offset=0.149)
  just_outside = _at_modes(GRID, [1] * 25, offset=0.151)
  assert toy2d_eval.mode_metrics(just_inside, GRID)['high_quality_fraction'] == 1.0
  m = toy2d_eval.mode_metrics(just_outside, GRID)
  assert m['high_quality_fraction'] == 0.0 and m['modes_covered'] == 0
  assert m['reverse_kl'] == math.inf


def test_skewed_histogram_kl_by_hand():
  counts = [0] * 25
  counts[0], counts[7], counts[24] = 50, 30, 20
  m = toy2d_eval.mode_metrics(_at_modes(GRID, counts), GRID)
  expected = 0.5 * math.log(0.5 * 25) + 0.3 * math.log(0.3 * 25) + 0.2 * math.log(0.2 * 25)
  assert m['reverse_kl'] == pytest.approx(expected, rel=1e-9)
  assert m['modes_covered'] == 3
  assert m['mode_counts'][0] == 50 and m['mode_counts'][7] == 30 and m['mode_counts'][24] == 20


def test_low_quality_samples_do_not_enter_the_kl():
  hq = _at_modes(GRID, [2] * 25)
  far = np.full((50, 2), 10.0, np.float32)  # Nearest to mode (4, 4) but far outside 3 sigma.
  m = toy2d_eval.mode_metrics(np.concatenate([hq, far]), GRID)
  assert m['reverse_kl'] == pytest.approx(0.0, abs=1e-12)
  assert m['high_quality_fraction'] == 0.5
  assert m['mode_counts'] == [2] * 25


def test_eight_gaussian_ring():
  ring = toy2d.get_mixture(RING)
  assert toy2d_eval.mode_metrics(_at_modes(RING, [5] * 8), RING)['modes_covered'] == 8
  # 3 sigma is 0.06 on the ring: a 0.05 shift is high quality, a 0.1 shift is not.
  m = toy2d_eval.mode_metrics(_at_modes(RING, [5] * 4 + [0] * 4, offset=0.05), RING)
  assert m['modes_covered'] == 4 and m['high_quality_fraction'] == 1.0
  assert m['reverse_kl'] == pytest.approx(math.log(2.0), rel=1e-9)
  assert toy2d_eval.mode_metrics(ring.centers + 0.1, RING)['high_quality_fraction'] == 0.0
  # The grid's 3 sigma (0.15) would accept that, so the std is per dataset.
  assert toy2d_eval.mode_metrics(_at_modes(GRID, [1] * 25, offset=0.1), GRID)[
      'high_quality_fraction'] == 1.0


def test_non_finite_samples_are_low_quality():
  samples = np.concatenate([_at_modes(GRID, [1] * 25), np.full((25, 2), np.nan, np.float32)])
  m = toy2d_eval.mode_metrics(samples, GRID)
  assert m['high_quality_fraction'] == 0.5 and m['modes_covered'] == 25


def test_bad_input_is_rejected():
  with pytest.raises(ValueError, match='shape'):
    toy2d_eval.mode_metrics(np.zeros((10, 3)), GRID)
  with pytest.raises(ValueError, match='shape'):
    toy2d_eval.mode_metrics(np.zeros((0, 2)), GRID)
  with pytest.raises(ValueError, match='config.data.toy'):
    toy2d_eval.mode_metrics(np.zeros((10, 2)), 'swissroll')
  with pytest.raises(ValueError, match='non-negative'):
    toy2d.sample_toy(GRID, -1, np.random.default_rng(0))


@pytest.mark.parametrize('name', [GRID, RING])
def test_sampler_modes_uniform_and_std(name):
  mixture = toy2d.get_mixture(name)
  n = 40_000
  points, modes = toy2d.sample_toy(name, n, np.random.default_rng(0))
  assert points.shape == (n, 2) and points.dtype == np.float32
  assert modes.shape == (n,) and modes.dtype == np.int32
  counts = np.bincount(modes, minlength=mixture.num_modes)
  expected = n / mixture.num_modes
  # Multinomial counts: 5 binomial standard deviations either side.
  assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
  residual = points - mixture.centers[modes]
  np.testing.assert_allclose(residual.std(axis=0), mixture.std, rtol=0.03)
  np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=5 * mixture.std / math.sqrt(n))
  # A sample of the data itself: all modes, P(|noise| <= 3 sigma) = 1 - exp(-9/2) in 2-D.
  m = toy2d_eval.mode_metrics(points, name)
  assert m['modes_covered'] == mixture.num_modes
  assert m['high_quality_fraction'] == pytest.approx(1.0 - math.exp(-4.5), abs=0.003)
  assert m['reverse_kl'] < 1e-3


def test_sampler_is_deterministic():
  a = toy2d.sample_toy(GRID, 100, np.random.default_rng(7))
  b = toy2d.sample_toy(GRID, 100, np.random.default_rng(7))
  c = toy2d.sample_toy(GRID, 100, np.random.default_rng(8))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_scatter_png(tmp_path):
  points, _ = toy2d.sample_toy(GRID, 2500, np.random.default_rng(0))
  path = tmp_path / 'scatter.png'
  toy2d_eval.save_scatter(str(path), points, GRID, size=200, title='data')
  image = np.asarray(Image.open(path).convert('RGB'))
  assert image.shape == (200, 200, 3)
  blue = (image[..., 2] > 150) & (image[..., 0] < 100)
  red = (image[..., 0] > 200) & (image[..., 1] < 100)
  assert blue.sum() > 100 and red.sum() > 25
  # Mode (0, 0) is at the image centre; the corners hold no mode.
  assert blue[95:106, 95:106].any() and not blue[:10, :10].any()


def _toy_config():
  config = tiny.get_config()
  config.eval.num_samples = 40
  config.eval.batch_size = 16
  return config


def test_toy_input_pipeline_is_deterministic_resumable_and_host_split():
  config = _toy_config()
  batches, num_examples = input_pipeline.create_dataset(config, process_index=0, process_count=1)
  assert num_examples == toy2d.NOMINAL_NUM_EXAMPLES
  first = [next(batches) for _ in range(3)]
  assert first[0]['image'].shape == (16, 2) and first[0]['image'].dtype == np.float32
  assert first[0]['label'].dtype == np.int32
  assert not np.array_equal(first[0]['image'], first[1]['image'])
  centers = toy2d.get_mixture(GRID).centers
  nearest = np.argmin(np.linalg.norm(first[0]['image'][:, None] - centers[None], axis=-1), axis=1)
  np.testing.assert_array_equal(nearest, first[0]['label'])
  resumed, _ = input_pipeline.create_dataset(config, start_step=2, process_index=0, process_count=1)
  np.testing.assert_array_equal(next(resumed)['image'], first[2]['image'])
  halves = [next(input_pipeline.create_dataset(config, process_index=p, process_count=2)[0])
            for p in (0, 1)]
  np.testing.assert_array_equal(np.concatenate([h['image'] for h in halves]), first[0]['image'])
  config.seed += 1
  other, _ = input_pipeline.create_dataset(config, process_index=0, process_count=1)
  assert not np.array_equal(next(other)['image'], first[0]['image'])


def test_toy_input_pipeline_rejects_bad_config():
  config = _toy_config()
  config.data.toy = 'swissroll'
  with pytest.raises(ValueError, match='config.data.toy'):
    input_pipeline.create_dataset(config, process_index=0, process_count=1)
  config = _toy_config()
  config.model.num_channels = 3
  with pytest.raises(ValueError, match='num_channels=2'):
    input_pipeline.create_dataset(config, process_index=0, process_count=1)


def test_toy2d_config_trains_mlps_on_the_grid():
  config = toy2d_config.get_config()
  assert config.data.dataset == 'toy2d' and config.data.toy == GRID
  assert (config.model.generator, config.model.discriminator) == ('mlp', 'mlp')
  assert config.model.num_channels == 2 and config.diffusion.num_timesteps == 4
  train_state.check_config(config)
  assert train_state.total_steps(config, toy2d.NOMINAL_NUM_EXAMPLES) == config.training.num_steps


def test_evaluate_writes_metrics_and_scatter(tmp_path):
  config = _toy_config()
  generator = models.build_generator(config)
  state = train_state.create_train_state(
      jax.random.PRNGKey(0), config, generator, models.build_discriminator(config), 100
  )
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=1)
  ckpt.save(state)
  ckpt.wait_until_finished()
  ckpt.close()
  metrics = evaluation.evaluate(config, str(tmp_path))
  assert metrics['step'] == 0 and metrics['num_timesteps'] == config.diffusion.num_timesteps
  assert metrics['num_samples'] == 40 and metrics['num_modes'] == 25
  assert metrics['dataset'] == 'toy2d' and metrics['dtype'] == 'float32'
  assert json.loads((tmp_path / 'eval' / 'metrics_step0.json').read_text()) == metrics
  assert Image.open(tmp_path / 'eval' / 'scatter_step0.png').size == (480, 480)


def test_evaluate_without_checkpoint_says_train_first(tmp_path):
  with pytest.raises(checkpoints.NoCheckpointError, match='Train first'):
    evaluation.evaluate(_toy_config(), str(tmp_path))
