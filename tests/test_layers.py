"""Layers against direct numpy references: FIR resampling, norms, minibatch stddev, embeddings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddgan_jax.models import discriminator
from ddgan_jax.models import embeddings
from ddgan_jax.models import layers

K = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def _np_upfirdn(x, k, up, down, pad):
  """upfirdn2d by definition: zero insertion, zero padding, true convolution, subsampling."""
  b, h, w, c = x.shape
  z = np.zeros((b, h * up, w * up, c))
  z[:, ::up, ::up] = x
  z = np.pad(z, ((0, 0), pad, pad, (0, 0)))
  kh = k.shape[0]
  out_h = z.shape[1] - kh + 1
  out = np.zeros((b, out_h, out_h, c))
  for i in range(out_h):
    for j in range(out_h):
      for u in range(kh):
        for v in range(kh):
          out[:, i, j] += z[:, i + u, j + v] * k[kh - 1 - u, kh - 1 - v]
  return out[:, ::down, ::down]


def _np_conv(x, w, stride, pad):
  """Cross-correlation NHWC x HWIO with symmetric zero padding."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh = w.shape[0]
  out_h = (x.shape[1] - kh) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_h, w.shape[3]))
  for i in range(out_h):
    for j in range(out_h):
      patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kh]
      out[:, i, j] = np.einsum('bhwi,hwio->bo', patch, w)
  return out


@pytest.fixture(name='x')
def fixture_x():
  return np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)


def test_upsample_2d_matches_definition(x):
  ref = _np_upfirdn(x, K * 4, up=2, down=1, pad=(2, 1))
  np.testing.assert_allclose(layers.upsample_2d(jnp.asarray(x)), ref, atol=1e-5)
  assert ref.shape == (2, 16, 16, 3)


def test_downsample_2d_matches_definition(x):
  ref = _np_upfirdn(x, K, up=1, down=2, pad=(1, 1))
  np.testing.assert_allclose(layers.downsample_2d(jnp.asarray(x)), ref, atol=1e-5)
  assert ref.shape == (2, 4, 4, 3)


def test_fir_keeps_constants_away_from_the_border():
  ones = jnp.ones((1, 8, 8, 1))
  np.testing.assert_allclose(layers.downsample_2d(ones)[0, 1:-1, 1:-1, 0], 1.0, atol=1e-6)
  np.testing.assert_allclose(layers.upsample_2d(ones)[0, 2:-2, 2:-2, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize('up, down, pad', [(1, 1, (1, 0)), (2, 1, (2, 1)), (3, 1, (1, 2)),
                                           (1, 2, (1, 1)), (1, 3, (0, 2))])
def test_upfirdn2d_with_an_asymmetric_kernel_flips_it(up, down, pad):
  taps = np.array([1.0, 2.0, 4.0], np.float32)
  x = np.random.default_rng(1).standard_normal((1, 6, 6, 2)).astype(np.float32)
  ref = _np_upfirdn(x, np.outer(taps, taps), up=up, down=down, pad=pad)
  out = layers.upfirdn2d(jnp.asarray(x), taps, up=up, down=down, pad=pad)
  np.testing.assert_allclose(out, ref, atol=1e-4)


def test_naive_resampling(x):
  up = np.asarray(layers.naive_upsample_2d(jnp.asarray(x)))
  np.testing.assert_array_equal(up[:, ::2, ::2], x)
  np.testing.assert_array_equal(up[:, 1::2, 1::2], x)
  down = np.asarray(layers.naive_downsample_2d(jnp.asarray(x)))
  np.testing.assert_allclose(down, x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=1e-6)


def test_fir_conv_down_is_blur_then_strided_conv(x):
  module = layers.FIRConv2d(5, down=True)
  variables = module.init(jax.random.key(0), jnp.asarray(x))
  w = np.asarray(variables['params']['kernel'])
  blurred = _np_upfirdn(x, K, up=1, down=1, pad=(2, 2))
  ref = _np_conv(blurred, w, stride=2, pad=0)
  np.testing.assert_allclose(module.apply(variables, jnp.asarray(x)), ref, atol=1e-4)
  assert ref.shape == (2, 4, 4, 5)


def test_fir_conv_up_is_transposed_conv_then_blur(x):
  module = layers.FIRConv2d(4, up=True)
  variables = module.init(jax.random.key(0), jnp.asarray(x))
  w = np.asarray(variables['params']['kernel'])
  # Transposed convolution by scattering: each input pixel adds w (flipped) around 2u.
  b, h, _, _ = x.shape
  t = np.zeros((b, 2 * h + 1, 2 * h + 1, 4))
  wf = w[::-1, ::-1]
  for u in range(h):
    for v in range(h):
      t[:, 2 * u:2 * u + 3, 2 * v:2 * v + 3] += np.einsum('bi,hwio->bhwo', x[:, u, v], wf)
  ref = _np_upfirdn(t, K * 4, up=1, down=1, pad=(1, 1))
  np.testing.assert_allclose(module.apply(variables, jnp.asarray(x)), ref, atol=1e-4)
  assert ref.shape == (2, 16, 16, 4)


def test_fir_kernel_must_be_1d():
  with pytest.raises(ValueError, match='1-D'):
    layers.fir_taps([[1, 2], [3, 4]])


def test_fir_conv_needs_one_direction(x):
  module = layers.FIRConv2d(4)
  with pytest.raises(ValueError, match='exactly one'):
    module.init(jax.random.key(0), jnp.asarray(x))


def test_group_norm_matches_numpy():
  x = np.random.default_rng(2).standard_normal((2, 4, 4, 16)).astype(np.float32) * 3 + 1
  y = x.reshape(2, 4, 4, 4, 4)
  mean = y.mean(axis=(1, 2, 4), keepdims=True)
  var = y.var(axis=(1, 2, 4), keepdims=True)
  ref = ((y - mean) / np.sqrt(var + 1e-6)).reshape(x.shape)
  np.testing.assert_allclose(layers.group_norm_stats(jnp.asarray(x), 4), ref, atol=1e-5)
  assert layers.num_groups_for(16) == 4 and layers.num_groups_for(512) == 32
  with pytest.raises(ValueError, match='groups'):
    layers.group_norm_stats(jnp.asarray(x), 5)


def test_adaptive_group_norm_starts_as_plain_group_norm():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
  zemb = jax.random.normal(jax.random.key(1), (2, 6))
  module = layers.AdaptiveGroupNorm()
  variables = module.init(jax.random.key(2), x, zemb)
  bias = np.asarray(variables['params']['style']['bias'])
  np.testing.assert_array_equal(bias, np.r_[np.ones(8), np.zeros(8)])
  # With the style kernel zeroed, gamma = 1 and beta = 0.
  variables = jax.tree_util.tree_map(jnp.zeros_like, variables)
  variables['params']['style']['bias'] = jnp.asarray(bias)
  np.testing.assert_allclose(module.apply(variables, x, zemb), layers.group_norm_stats(x, 2),
                             atol=1e-6)


def test_fan_out_initialiser_bound():
  """The official dense_layer init: uniform with bound sqrt(3 / fan_out), fan_out = out units."""
  w = layers.fan_out_init()(jax.random.key(0), (1000, 10))
  bound = math.sqrt(3 / 10)
  assert float(jnp.max(jnp.abs(w))) <= bound
  assert float(jnp.max(jnp.abs(w))) > 0.95 * bound
  w = layers.default_init()(jax.random.key(0), (1000, 10))
  assert float(jnp.max(jnp.abs(w))) <= math.sqrt(3 / 505)
  assert float(jnp.max(jnp.abs(layers.default_init(0.0)(jax.random.key(0), (8, 8))))) < 1e-4


def _np_minibatch_stddev(x, group=4):
  """The official view(group, -1, ...) semantics on NHWC."""
  b, h, w, c = x.shape
  g = min(b, group)
  y = x.reshape(g, b // g, h, w, c)
  std = np.sqrt(y.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))
  col = np.tile(std, g)[:, None, None, None] * np.ones((b, h, w, 1))
  return np.concatenate([x, col], axis=-1)


@pytest.mark.parametrize('batch', [1, 2, 4, 8])
def test_minibatch_stddev_matches_official_grouping(batch):
  x = np.random.default_rng(batch).standard_normal((batch, 4, 4, 6)).astype(np.float32)
  np.testing.assert_allclose(discriminator.minibatch_stddev(jnp.asarray(x)),
                             _np_minibatch_stddev(x), atol=1e-5)


def test_minibatch_stddev_handles_batches_the_official_code_rejects():
  x = jax.random.normal(jax.random.key(0), (6, 2, 2, 3))
  out = discriminator.minibatch_stddev(x)  # Groups of 3 (the official view() fails here).
  assert out.shape == (6, 2, 2, 4)
  np.testing.assert_allclose(out[:, 0, 0, 3], out[:, 1, 1, 3])


def test_timestep_embedding_closed_form():
  t = jnp.array([0, 1, 3])
  emb = np.asarray(embeddings.timestep_embedding(t, 8))
  freqs = np.exp(-np.arange(4) * math.log(10_000) / 3)
  ref = np.concatenate([np.sin(np.outer([0, 1, 3], freqs)), np.cos(np.outer([0, 1, 3], freqs))], 1)
  np.testing.assert_allclose(emb, ref, atol=1e-5)
  assert embeddings.timestep_embedding(t, 9).shape == (3, 9)


def test_fourier_embedding_is_finite_at_t0():
  module = embeddings.GaussianFourierProjection(16, scale=16.0)
  t = jnp.array([0, 1, 2, 3])
  variables = module.init(jax.random.key(0), t)
  out = np.asarray(module.apply(variables, t))
  assert out.shape == (4, 32) and np.all(np.isfinite(out))
  np.testing.assert_allclose(out[0], np.r_[np.zeros(16), np.ones(16)], atol=1e-6)
  assert 'constants' in variables and 'params' not in variables
