"""XLA compilation: the persistent compilation cache, and a counter of backend compilations.

The cache keeps compiled programs on disk, so a second run of the same config (a resume, a
sample or eval run, a rerun of the tests) loads the training step instead of compiling it again.
"""

import collections
import os

from absl import logging
import jax

DEFAULT_CACHE_DIR = '~/.cache/ddgan_jax/xla'
_LOWERING_EVENT = '/jax/core/compile/jaxpr_to_mlir_module_duration'


def enable_persistent_cache(directory: str | None) -> str | None:
  """Turns JAX's persistent compilation cache on in ``directory``; '' turns it off.

  Args:
    directory: the cache directory (``~`` expanded; local or gs://). None keeps the directory
      that the ``JAX_COMPILATION_CACHE_DIR`` environment variable names, else uses
      ``DEFAULT_CACHE_DIR``.

  Returns:
    The directory in use, or None when the cache is off.
  """
  if directory is None:
    directory = os.environ.get('JAX_COMPILATION_CACHE_DIR') or DEFAULT_CACHE_DIR
  if not directory:
    jax.config.update('jax_compilation_cache_dir', None)
    logging.info('The persistent compilation cache is off.')
    return None
  if '://' not in directory:
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  logging.info('Persistent compilation cache: %s', directory)
  return directory


class CompileCounter:
  """Counts the programs jitted inside a ``with`` block, by function name (``'jit(f)'``).

  Each count is one lowering of a jitted function to XLA: a compilation, or a load from the
  persistent cache when that holds the program. Calls that reuse a compiled program count 0.

  Attributes:
    counts: function name -> number of programs built.
  """

  def __init__(self):
    self.counts = collections.Counter()

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del duration
    if event == _LOWERING_EVENT:
      self.counts[kwargs.get('fun_name', '?')] += 1

  def __enter__(self) -> 'CompileCounter':
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)


def compile_for_one_call(jitted, *args):
  """Compiles a program that runs once per process (the state initialisation), with LLVM's
  optimisations off on CPU.

  On 2 CPU cores this halves the compile of the digits quickstart's initialisation (13 s to
  7 s); it then runs in milliseconds either way. Its values can differ from the optimised
  program's in the last bit (some truncated-normal initialisers).

  Args:
    jitted: a ``jax.jit``-wrapped function.
    *args: its arguments (for the shapes).

  Returns:
    The compiled program, called with ``args``'s non-static arguments.
  """
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
  return jitted.lower(*args).compile(compiler_options=options)
