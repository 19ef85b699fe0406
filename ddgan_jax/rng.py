"""Streams of randomness by purpose, all derived from one root key ``PRNGKey(config.seed)``.

Each purpose (initialisation, training, the training-time sample grid, ``--mode=sample`` and
``--mode=eval``) draws from its own stream ``fold_in(root, id)``, where ``id`` is a fixed 32-bit
hash of the purpose's name. Within a stream, keys come from ``fold_in(stream, i)`` (training step
i, sampling batch i) or ``split``. With JAX's default threefry RNG ``fold_in(K, i)`` equals
``split(K, n)[i]``, so deriving every use from the root with small integers makes them collide;
the hashed ids keep the purposes apart (``tests/test_rng.py`` checks every key a run derives).
"""

import zlib

import jax

PURPOSES = ('init', 'train', 'grid', 'sample', 'eval')


def purpose_id(purpose: str) -> int:
  """The 32-bit id of ``purpose``: CRC-32 of ``'ddgan_jax/' + purpose``."""
  if purpose not in PURPOSES:
    raise ValueError(f'Unknown randomness purpose {purpose!r}; expected one of {PURPOSES}.')
  return zlib.crc32(f'ddgan_jax/{purpose}'.encode())


def stream(root: jax.Array, purpose: str) -> jax.Array:
  """The key of ``purpose``'s stream.

  Args:
    root: (2,) uint32 root key, ``PRNGKey(config.seed)``.
    purpose: one of ``PURPOSES``.

  Returns:
    (2,) uint32 key.
  """
  return jax.random.fold_in(root, purpose_id(purpose))


def seed_stream(seed: int, purpose: str) -> jax.Array:
  """``stream(PRNGKey(seed), purpose)``."""
  return stream(jax.random.PRNGKey(seed), purpose)
