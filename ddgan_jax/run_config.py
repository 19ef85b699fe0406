"""The config travels with the run: ``<workdir>/config.json``, kept from the first checkpoint on.

Training writes the resolved config (every command-line override applied) from process 0 until
the run's first checkpoint exists; ``convert`` writes it beside a converted checkpoint. Later runs
check their config against it: the fields that decide what the checkpoint holds and what its
samples mean (``ARCHITECTURE_FIELDS``) must be equal, the others (sampling and evaluation
settings, training length) may differ. With the file in place, no mode of ``ddgan_jax.main``
needs ``--config``.

A file written before a field existed lacks it; ``load`` fills such fields with the defaults of
``configs/default.py``, each of which is the behaviour from before its field was added (for
instance ``training.eval_every=0``: no evaluation during training; ``eval.image_format='png'``).
"""

import importlib.util
import json
import pathlib
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections

CONFIG_FILE = 'config.json'
DEFAULT_CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'default.py'

# Config paths whose values must match the saved ones; a trailing '.' covers a whole section.
# diffusion.* includes num_timesteps: a model trained at T is only ever sampled at T.
ARCHITECTURE_FIELDS = ('model.', 'diffusion.', 'data.dataset', 'data.toy')


def path(workdir: str) -> epath.Path:
  return epath.Path(workdir) / CONFIG_FILE


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs use (and that --config.x='(1, 2)' overrides)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _plain(config: ml_collections.ConfigDict) -> dict:
  return _tuples(json.loads(config.to_json()))


def _defaults() -> dict:
  """The fields of ``configs/default.py``, as nested plain values."""
  spec = importlib.util.spec_from_file_location('ddgan_jax_default_config', DEFAULT_CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return _plain(module.get_config())


def _same_type(value: Any, default: Any) -> bool:
  """Whether a saved value fits a field whose default is ``default`` (an int fits a float)."""
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  return type(value) is type(default)


def _fill(tree: dict, defaults: dict, file: epath.Path, prefix: str = '') -> list[str]:
  """Adds the fields of ``defaults`` missing from ``tree`` in place; returns their paths.

  Raises:
    ValueError: a field of ``tree`` has another type than its default, naming it and ``file``.
  """
  filled = []
  for key, default in defaults.items():
    name = f'{prefix}{key}'
    if key not in tree:
      tree[key] = default
      filled.append(name)
    elif not _same_type(tree[key], default):
      raise ValueError(
          f'{file}: {name} is {tree[key]!r} ({type(tree[key]).__name__}), where '
          f'{DEFAULT_CONFIG_FILE} has {default!r} ({type(default).__name__}). Correct or delete '
          'the field (a deleted field takes the default), or pass --config and delete the file.')
    elif isinstance(default, dict):
      filled += _fill(tree[key], default, file, f'{name}.')
  return filled


def load(workdir: str) -> ml_collections.ConfigDict | None:
  """The config saved in ``workdir``, or None when it has none.

  Fields the file lacks (it was written before they existed) take the defaults of
  ``configs/default.py``, which keep the behaviour the run had; one log line lists them.

  Raises:
    ValueError: the file exists but is not a JSON object, or one of its fields is of another type
      than its default (the message names the field and the file).
  """
  p = path(workdir)
  if not p.exists():
    return None
  try:
    tree = json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{p} is not valid JSON ({e}); restore it, or pass --config and delete '
                     'it.') from None
  if not isinstance(tree, dict):
    raise ValueError(f'{p} holds a {type(tree).__name__}, not a config; restore it, or pass '
                     '--config and delete it.')
  tree = _tuples(tree)
  filled = _fill(tree, _defaults(), p)
  if filled:
    logging.info('%s predates the config fields %s; they take the defaults of %s.', p,
                 ', '.join(filled), DEFAULT_CONFIG_FILE)
  return ml_collections.ConfigDict(tree)


def _is_architecture(name: str) -> bool:
  return any(name == f or (f.endswith('.') and name.startswith(f)) for f in ARCHITECTURE_FIELDS)


def architecture(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The architecture fields of ``config``, by dotted path."""
  return {k: v for k, v in _flatten(_plain(config)).items() if _is_architecture(k)}


def architecture_differences(
    config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict
) -> list[str]:
  """'field: given vs saved' for every architecture field where the two configs differ."""
  given, kept = architecture(config), architecture(saved)
  missing = '<missing>'
  return [
      f'{name}: {given.get(name, missing)!r} vs saved {kept.get(name, missing)!r}'
      for name in sorted(set(given) | set(kept))
      if given.get(name, missing) != kept.get(name, missing)
  ]


def check(config: ml_collections.ConfigDict, saved: ml_collections.ConfigDict,
          workdir: str) -> None:
  """Raises ValueError naming each architecture field where ``config`` contradicts ``saved``."""
  differences = architecture_differences(config, saved)
  if differences:
    raise ValueError(
        f'The config contradicts the one the run in {workdir} was trained with '
        f'({path(workdir)}):\n  ' + '\n  '.join(differences) + '\nThese fields fix the '
        'networks and the noise schedule (a model trained with T steps samples only at T). Drop '
        '--config to use the saved config, or train in a new --workdir.'
    )


def resolve(config: ml_collections.ConfigDict | None, workdir: str) -> ml_collections.ConfigDict:
  """The config to sample or evaluate ``workdir`` with.

  Args:
    config: the --config given, or None.
    workdir: the run's workdir.

  Returns:
    ``config`` once checked against the saved one, the saved one when ``config`` is None, or
    ``config`` unchecked for workdirs written before configs were saved.

  Raises:
    ValueError: neither a config nor a saved one, or the two contradict each other.
  """
  saved = load(workdir)
  if saved is None:
    if config is None:
      raise ValueError(
          f'{workdir} holds no {CONFIG_FILE} (a run saves it when it first trains, or when '
          'converted): pass a config (--config=FILE, or config= in Python), the one the run was '
          'trained with or, for a new run, the one to train with.'
      )
    return config
  if config is None:
    return saved
  check(config, saved, workdir)
  return config


def record(config: ml_collections.ConfigDict, workdir: str, has_checkpoints: bool) -> None:
  """Writes ``config`` to ``workdir``, or checks it against the saved one once checkpoints exist.

  The file is written until the first checkpoint (nothing depends on it before, so a run that
  failed early can restart with another architecture) and kept as is after; a workdir whose
  checkpoints predate saved configs gets none. Process 0 writes; every process checks, so that
  all of them fail alike.

  Args:
    config: the resolved config of this run.
    workdir: the run's workdir.
    has_checkpoints: whether ``workdir`` already holds a checkpoint.

  Raises:
    ValueError: checkpoints exist and the saved config's architecture differs from ``config``'s.
  """
  saved = load(workdir)
  if has_checkpoints:
    if saved is None:
      logging.info('%s predates saved configs; it stays without one (pass --config to use it).',
                   workdir)
    else:
      check(config, saved, workdir)
    return
  if jax.process_index() == 0:
    target = path(workdir)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f'{CONFIG_FILE}.partial'
    partial.write_text(json.dumps(_plain(config), indent=2, sort_keys=True) + '\n')
    partial.replace(target)  # Other processes never read a half-written file.
    logging.info('Wrote the run config to %s.', target)
