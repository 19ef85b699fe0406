#!/usr/bin/env bash
# Trains on one machine with all of its GPUs in one JAX process (the batch is split over them).
#
#   launch/gpu_single_node.sh [--dry-run] --config=configs/X.py --workdir=DIR [--gpus=0,1,...]
#     [--python=PYTHON] [-- ddgan_jax.main flags]
#
# --gpus picks GPUs by index (CUDA_VISIBLE_DEVICES; default: all); --python is the interpreter
# of the environment that has `pip install -e '.[cuda]'` (default: python). The run stays in the
# foreground: start it inside tmux or screen to outlive the terminal. Running the same command
# again resumes from the newest checkpoint in --workdir; SIGTERM (kill PID) saves one first.
# --dry-run prints the command instead of running it.
# Example (configs/cifar10.py measures FID during training, which needs the Inception weights,
# converted once where torch is installed with python -m ddgan_jax.fid convert):
#   launch/gpu_single_node.sh --config=configs/cifar10.py --workdir=/data/runs/cifar10 \
#     -- --config.training.batch_size=256 --config.eval.inception_weights=/data/fid_inception.npz
set -euo pipefail

SCRIPT=gpu_single_node.sh
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

dry_run=0 config='' workdir='' gpus='' python=python extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --gpus=*) gpus=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
need config workdir
[[ -z $gpus || $gpus =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus=$gpus must be indices like 0,1,2,3"

cd "$(dirname "$0")/.."
cmd=("$python" -m ddgan_jax.main --config="$config" --workdir="$workdir" "${extra[@]}")
if [[ -n $gpus ]]; then cmd=(env CUDA_VISIBLE_DEVICES="$gpus" "${cmd[@]}"); fi
run "${cmd[@]}"
