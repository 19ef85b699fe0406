#!/usr/bin/env bash
# Mode-coverage sweep of one config over the number of denoising steps T and the seeds.
#
# Each run trains CONFIG through the CLI, then scores it with --mode=eval; the script ends by
# printing a markdown table (mean ± sample std over the seeds) of the mode metrics and the
# training wall time, also written to ROOT/results.md. Configs with mode metrics: configs/toy2d.py
# (modes of 25, % high-quality samples) and configs/stacked_digits.py (modes of 1000, % samples
# with all three digits confident).
#
#   launch/timestep_sweep.sh CONFIG [ROOT] [extra --config.* flags for every run]
#
# ROOT defaults to /tmp/ddgan_sweep_<config name>; run k lives in ROOT/T<T>_seed<seed>.
# Environment: PYTHON (default python), TIMESTEPS (default "1 2 4 8"), SEEDS (default "0 1 2"). A
# run whose train_seconds file exists is not retrained, nor re-scored once an
# eval/metrics_step*.json is newer, so an interrupted sweep can be restarted, and parts of it run
# side by side (TIMESTEPS=...).
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "Usage: launch/timestep_sweep.sh CONFIG [ROOT] [--config.* flags]; CONFIG is a file." >&2
  exit 2
fi
CONFIG="$1"
ROOT="${2:-/tmp/ddgan_sweep_$(basename "$CONFIG" .py)}"
shift $(( $# < 2 ? $# : 2 ))
PYTHON="${PYTHON:-python}"
TIMESTEPS="${TIMESTEPS:-1 2 4 8}"
SEEDS="${SEEDS:-0 1 2}"

mkdir -p "$ROOT"
for t in $TIMESTEPS; do
  for seed in $SEEDS; do
    wd="$ROOT/T${t}_seed${seed}"
    flags=(--config="$CONFIG" --workdir="$wd" --config.diffusion.num_timesteps="$t"
           --config.seed="$seed" "$@")
    mkdir -p "$wd"
    if [[ ! -f "$wd/train_seconds" ]]; then
      echo "Training T=$t seed=$seed in $wd"
      start=$(date +%s.%N)
      "$PYTHON" -m ddgan_jax.main "${flags[@]}" --mode=train > "$wd/train.log" 2>&1 \
        || { echo "Training failed; see $wd/train.log" >&2; exit 1; }
      end=$(date +%s.%N)
      awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$wd/train_seconds"
    fi
    # shellcheck disable=SC2012  # The names are metrics_step<N>.json: ls -t is safe and short.
    metrics=$(ls -t "$wd"/eval/metrics_step*.json 2>/dev/null | head -n 1 || true)
    if [[ -z "$metrics" || "$metrics" -ot "$wd/train_seconds" ]]; then
      "$PYTHON" -m ddgan_jax.main "${flags[@]}" --mode=eval > "$wd/eval.log" 2>&1 \
        || { echo "Evaluation failed; see $wd/eval.log" >&2; exit 1; }
    fi
    grep -o 'Step .*' "$wd/eval.log" | tail -n 1
  done
done

"$PYTHON" - "$ROOT" "$TIMESTEPS" "$SEEDS" <<'PY' | tee "$ROOT/results.md"
import json
import pathlib
import sys

import numpy as np

root, timesteps, seeds = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()
# Per dataset: the table's columns, each (header, value of a scores dict, format), and where the
# scores of the samples and of real data (None: no reference) are in a metrics dict.
COLUMNS = {
    'toy2d': [
        ('modes covered (of 25)', lambda s: s['modes_covered'], '.1f'),
        ('high-quality samples (%)', lambda s: 100 * s['high_quality_fraction'], '.1f'),
        ('reverse KL', lambda s: s['reverse_kl'], '.4f'),
    ],
    'stacked_digits': [
        ('modes covered (of 1000)', lambda s: s['modes_covered'], '.1f'),
        ('reverse KL', lambda s: s['reverse_kl'], '.4f'),
        ('all three digits confident (%)', lambda s: 100 * s['confident_fraction'], '.1f'),
    ],
}
SCORES = {'toy2d': (lambda m: m, None),
          'stacked_digits': (lambda m: m['samples'], lambda m: m['real'])}


def cell(values, fmt):
  values = np.asarray(values, np.float64)
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f'{values.mean():{fmt}} ± {std:{fmt}}'


def row(name, scores, columns, last):
  return (f'| {name} | ' + ' | '.join(cell([value(s) for s in scores], fmt)
                                      for _, value, fmt in columns) + f' | {last} |')


rows = []
for t in timesteps:
  runs = [root / f'T{t}_seed{s}' for s in seeds]
  newest = [max((r / 'eval').glob('metrics_step*.json'), key=lambda p: int(p.stem[12:]))
            for r in runs]
  metrics = [json.loads(p.read_text()) for p in newest]
  seconds = [float((r / 'train_seconds').read_text()) for r in runs]
  dataset = metrics[0]['dataset']
  columns, (samples, real) = COLUMNS[dataset], SCORES[dataset]
  rows.append(row(t, [samples(m) for m in metrics], columns, cell(seconds, '.0f')))
if real:
  rows.append(row('real data', [real(m) for m in metrics], columns, ''))
print('| T | ' + ' | '.join(header for header, _, _ in columns) + ' | train time (s) |')
print('|---' * (len(columns) + 2) + '|')
print('\n'.join(rows))
print(f'\nMean ± sample std over seeds {", ".join(seeds)}; {metrics[0]["num_samples"]} EMA '
      'samples per run.')
PY
