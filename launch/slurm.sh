#!/usr/bin/env bash
# Trains on several GPU nodes under SLURM: writes a batch script and submits it with sbatch.
#
#   launch/slurm.sh [--dry-run] --nodes=N --gpus_per_node=G --config=configs/X.py --workdir=DIR
#     [--per=node|gpu] [--partition=P] [--account=A] [--time=HH:MM:SS] [--venv=PATH]
#     [-- ddgan_jax.main flags]
#
# --per=node (default) starts one JAX process per node that drives all G GPUs; --per=gpu starts
# G processes per node with one GPU each. Every process runs ddgan_jax.main --distributed, which
# finds the coordinator, the process count and its own rank in SLURM's variables (SLURM_NTASKS,
# SLURM_PROCID, SLURM_LOCALID, the node list). --venv is a virtual environment made with
# `pip install -e '.[cuda]'` on a filesystem that every node sees, as is this checkout; the job
# runs from this checkout, and --workdir must be shared too. Task k logs to
# ddgan_jax_<jobid>_<k>.log here. SLURM sends SIGTERM 120 s before --time runs out, and every
# process then saves a checkpoint; submitting the same command again resumes from it.
# --dry-run prints the batch script and the sbatch command instead of submitting.
# Example (configs/cifar10.py measures FID during training, on every process: they all read the
# Inception weights, converted once where torch is installed with python -m ddgan_jax.fid convert):
#   launch/slurm.sh --nodes=2 --gpus_per_node=8 --partition=gpu --time=24:00:00 \
#     --venv=$HOME/venvs/ddgan --config=configs/cifar10.py --workdir=/shared/runs/cifar10 \
#     -- --config.eval.inception_weights=/shared/fid_inception.npz
set -euo pipefail

SCRIPT=slurm.sh
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

dry_run=0 nodes='' gpus_per_node='' config='' workdir='' per=node partition='' account=''
time_limit='' venv='' extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --nodes=*) nodes=${1#*=} ;;
    --gpus_per_node=*) gpus_per_node=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --per=*) per=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --venv=*) venv=${1#*=} ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
need nodes gpus_per_node config workdir
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes=$nodes must be a positive integer"
[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node=$gpus_per_node must be a positive integer"
case $per in
  node) tasks_per_node=1 ;;
  gpu) tasks_per_node=$gpus_per_node ;;
  *) die "--per=$per must be node or gpu" ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
flags=$(printf ' %q' --distributed --config="$config" --workdir="$workdir" "${extra[@]}")
batch="#!/usr/bin/env bash
#SBATCH --job-name=ddgan_jax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
#SBATCH --gpus-per-node=$gpus_per_node
#SBATCH --signal=TERM@120
#SBATCH --output=ddgan_jax_%j.log
${partition:+#SBATCH --partition=$partition
}${account:+#SBATCH --account=$account
}${time_limit:+#SBATCH --time=$time_limit
}set -euo pipefail
cd $(printf '%q' "$repo")
${venv:+source $(printf '%q' "$venv")/bin/activate
}"
if [[ $per == node ]]; then
  # Under SLURM, JAX gives each process only the GPU numbered SLURM_LOCALID unless told otherwise.
  batch+="export JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus_per_node - 1)))
"
fi
batch+="srun --output=ddgan_jax_%j_%t.log python -m ddgan_jax.main$flags
"

echo "sbatch <<'BATCH'"
printf '%s' "$batch"
echo 'BATCH'
if [[ $dry_run == 0 ]]; then sbatch <<< "$batch"; fi
