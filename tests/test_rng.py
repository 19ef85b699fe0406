"""The streams of randomness: every key a run derives is distinct from every other."""

import jax
import numpy as np
import pytest

from ddgan_jax import rng as rng_lib
from ddgan_jax.evaluation import levels

_N = 2000


def _children(keys: jax.Array) -> np.ndarray:
  """keys (K, 2) and the keys the code derives from each, fold_in(k, i) for i < 8.

  Those include split(k, n)[i], which equals fold_in(k, i) under threefry.
  """
  out = [np.asarray(keys)]
  for i in range(8):
    out.append(np.asarray(jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)))
  return np.concatenate(out)


def _level_keys(eval_base) -> np.ndarray:
  """The batch keys of config.eval.per_level: 16 batches of 8 levels of each part."""
  t, b = np.divmod(np.arange(8 * 16), 16)
  return np.concatenate([
      jax.vmap(lambda t, b, part=part: levels.batch_key(eval_base, part, t, b))(t, b)
      for part in levels.PARTS])


def _run_keys(init_keys, train_base, grid, sample_base, eval_base, level_keys) -> np.ndarray:
  """Every first- and second-level key of a run: init, N train steps, grid, N batches each, and
  the per-level batches of evaluation."""
  idx = np.arange(_N)
  fold = lambda base: jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
  first = np.concatenate([np.asarray(init_keys), np.asarray(grid)[None], fold(train_base),
                          fold(sample_base), fold(eval_base), np.asarray(level_keys)])
  return _children(first)


def _num_distinct(keys: np.ndarray) -> int:
  return len({tuple(k) for k in keys.tolist()})


@pytest.mark.parametrize('seed', [0, 1, 42])
def test_every_derived_key_is_distinct_across_purposes(seed):
  root = jax.random.PRNGKey(seed)
  eval_base = rng_lib.stream(root, 'eval')
  keys = _run_keys(jax.random.split(rng_lib.stream(root, 'init')), rng_lib.stream(root, 'train'),
                   rng_lib.stream(root, 'grid'), rng_lib.stream(root, 'sample'), eval_base,
                   _level_keys(eval_base))
  assert _num_distinct(keys) == len(keys)


def test_the_old_derivation_collides_so_the_check_can_fail():
  """The scheme before the streams: init split(root, 3), grid fold_in(root, 1), batches
  fold_in(root, b). Sampling batches 0 and 1 were the init keys and batch 2 the training key."""
  root = jax.random.PRNGKey(0)
  g, d, train_base = jax.random.split(root, 3)
  keys = _run_keys(np.stack([g, d]), train_base, jax.random.fold_in(root, 1), root, root,
                   np.zeros((0, 2), np.uint32))
  assert _num_distinct(keys) < len(keys)
  np.testing.assert_array_equal(jax.random.fold_in(root, 2), train_base)


def test_purpose_ids_are_fixed_and_unknown_purposes_are_refused():
  assert len({rng_lib.purpose_id(p) for p in rng_lib.PURPOSES}) == len(rng_lib.PURPOSES)
  assert rng_lib.purpose_id('train') == 1713319617
  with pytest.raises(ValueError, match='expected one of'):
    rng_lib.stream(jax.random.PRNGKey(0), 'training')
