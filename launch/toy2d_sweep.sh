#!/usr/bin/env bash
# Mode-coverage sweep on the 25-Gaussian grid: T = 1, 2, 4, 8 denoising steps x seeds 0, 1, 2.
#
# launch/timestep_sweep.sh with configs/toy2d.py; see it for the table and the environment.
#
#   launch/toy2d_sweep.sh [ROOT] [extra --config.* flags for every run]
#
# ROOT defaults to /tmp/ddgan_toy2d_sweep.
set -euo pipefail

exec "$(dirname "$0")/timestep_sweep.sh" configs/toy2d.py "${1:-/tmp/ddgan_toy2d_sweep}" "${@:2}"
