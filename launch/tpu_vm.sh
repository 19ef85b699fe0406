#!/usr/bin/env bash
# Trains DDGAN on a (multi-host) Cloud TPU VM slice: installs this repository on every worker, then
# starts the same command on all of them; jax.distributed.initialize() (--distributed) finds the
# slice's coordinator by itself.
#
# Usage (from your workstation, with gcloud configured):
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [extra flags for ddgan_jax.main ...]
# Example:
#   launch/tpu_vm.sh ddgan-v4-32 us-central2-b configs/cifar10.py gs://my-bucket/ddgan_cifar10
#
# WORKDIR should be a gs:// path that every worker can write. Re-running the command resumes from
# the newest checkpoint there (also after a preemption, which saves a checkpoint before exiting).
# The dataset must be readable by every worker: set --config.data.data_dir=gs://.../tfds to a
# prepared TFDS directory (see the README) or prepare it on each worker first.
set -euo pipefail

if [ "$#" -lt 4 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
repo=$(cd "$(dirname "$0")/.." && pwd)
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all)

tar -C "$repo" --exclude=.git -czf /tmp/ddgan_jax_src.tgz .
gcloud compute tpus tpu-vm scp /tmp/ddgan_jax_src.tgz "$tpu":/tmp/ --zone "$zone" --worker=all
"${ssh[@]}" --command "set -e; rm -rf ~/ddgan_jax && mkdir ~/ddgan_jax && tar -C ~/ddgan_jax -xzf /tmp/ddgan_jax_src.tgz \
  && python3 -m pip install -q -U pip && python3 -m pip install -q 'jax[tpu]' -e ~/ddgan_jax"
extra=$(printf ' %q' "$@")
"${ssh[@]}" --command "cd ~/ddgan_jax && python3 -m ddgan_jax.main --distributed \
  --config=$config --workdir=$workdir$extra"
