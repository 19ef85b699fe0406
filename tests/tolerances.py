"""Float comparisons scaled to each tensor's magnitude, so that they hold on any CPU.

An elementwise relative tolerance fails on the small entries of a tensor, whose rounding error is
set by the tensor's large entries; an absolute one means nothing for tensors of another scale.
``assert_trees_close`` bounds each leaf's largest difference by ``rel`` times its largest magnitude.
"""

import jax
import numpy as np


def assert_trees_close(actual, expected, rel: float, what: str = 'tree') -> None:
  """Asserts max|a - e| <= rel * max|e| for every pair of leaves (both trees of the same shape).

  Args:
    actual: a pytree of arrays.
    expected: a pytree of arrays with the same structure and shapes.
    rel: the tolerance, relative to each expected leaf's largest absolute value.
    what: a name for the message.
  """
  paths_a, tree_a = jax.tree_util.tree_flatten_with_path(actual)
  leaves_e, tree_e = jax.tree_util.tree_flatten(expected)
  assert tree_a == tree_e, f'{what}: structures differ: {tree_a} vs {tree_e}'
  for (path, a), e in zip(paths_a, leaves_e):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape, f'{what}{jax.tree_util.keystr(path)}: shape {a.shape} vs {e.shape}'
    scale = float(np.max(np.abs(e), initial=0.0))
    err = float(np.max(np.abs(a - e), initial=0.0))
    assert err <= rel * scale, (
        f'{what}{jax.tree_util.keystr(path)}: max difference {err:.3g} exceeds {rel:g} x the '
        f'largest magnitude {scale:.3g}')
