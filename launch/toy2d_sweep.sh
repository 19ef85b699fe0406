#!/usr/bin/env bash
# Mode-coverage sweep on the 25-Gaussian grid: T = 1, 2, 4, 8 denoising steps x seeds 0, 1, 2.
#
# Each run trains configs/toy2d.py through the CLI, then scores it with --mode=eval; the script
# ends by printing a markdown table (mean ± sample std over the seeds) of modes covered, % high
# quality samples, reverse KL and training wall time, also written to ROOT/results.md.
#
#   launch/toy2d_sweep.sh [ROOT] [extra --config.* flags for every run]
#
# ROOT defaults to /tmp/ddgan_toy2d_sweep; run k lives in ROOT/T<T>_seed<seed>. Environment:
# PYTHON (default python), TIMESTEPS (default "1 2 4 8"), SEEDS (default "0 1 2"). A run whose
# train_seconds file exists is not retrained, nor re-scored once an eval/metrics_step*.json is
# newer, so an interrupted sweep can be restarted, and parts of it run side by side (TIMESTEPS=...).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="${1:-/tmp/ddgan_toy2d_sweep}"
shift || true
PYTHON="${PYTHON:-python}"
TIMESTEPS="${TIMESTEPS:-1 2 4 8}"
SEEDS="${SEEDS:-0 1 2}"
CONFIG=configs/toy2d.py

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

"$PYTHON" - "$ROOT" "$TIMESTEPS" "$SEEDS" <<'EOF' | tee "$ROOT/results.md"
import json
import pathlib
import sys

import numpy as np

root, timesteps, seeds = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split()


def cell(values, fmt):
  values = np.asarray(values, np.float64)
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f'{values.mean():{fmt}} ± {std:{fmt}}'


print('| T | modes covered | high-quality samples (%) | reverse KL | train time (s) |')
print('|---|---|---|---|---|')
for t in timesteps:
  runs = [root / f'T{t}_seed{s}' for s in seeds]
  newest = [max((r / 'eval').glob('metrics_step*.json'), key=lambda p: int(p.stem[12:]))
            for r in runs]
  metrics = [json.loads(p.read_text()) for p in newest]
  seconds = [float((r / 'train_seconds').read_text()) for r in runs]
  print(f'| {t} | {cell([m["modes_covered"] for m in metrics], ".1f")} '
        f'| {cell([100 * m["high_quality_fraction"] for m in metrics], ".1f")} '
        f'| {cell([m["reverse_kl"] for m in metrics], ".4f")} | {cell(seconds, ".0f")} |')
print(f'\nMean ± sample std over seeds {", ".join(seeds)}; {metrics[0]["num_modes"]} modes, '
      f'{metrics[0]["num_samples"]} EMA samples per run.')
EOF
