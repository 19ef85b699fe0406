#!/usr/bin/env bash
# Cloud TPU VMs (one host or a multi-host slice) for ddgan_jax, from your workstation (gcloud
# installed, `gcloud auth login` and `gcloud config set project PROJECT` done).
#
#   launch/tpu_vm.sh [--dry-run] COMMAND --name=NAME --zone=ZONE [options] [-- main.py flags]
#
# Commands:
#   create   make the VM or slice: --accelerator=TYPE (v4-8, v4-32, v5litepod-8, v6e-8, ...)
#            --version=RUNTIME (tpu-ubuntu2204-base for v4; v2-alpha-tpuv5-lite for v5e;
#            v2-alpha-tpuv6e for v6e) and optionally --spot or --preemptible.
#   install  copy this checkout to every worker and install it there in ~/ddgan_venv
#            (Python 3.11, jax[tpu]).
#   train    start training on every worker in the background (it outlives the ssh session):
#            --config=configs/X.py --workdir=gs://BUCKET/RUN; flags after -- go to
#            ddgan_jax.main. Each worker logs to ~/ddgan_jax_train.log. Training resumes from
#            the newest checkpoint in the workdir, so after a preemption run `up` again.
#   up       create (unless the VM is READY; a preempted one is deleted and made again), install,
#            train: the one command to start a run and to resume it after a preemption.
#   logs     follow the training log of --worker=N (default 0; --worker=all for every worker).
#   stop     send SIGTERM to training on every worker: all save a checkpoint and exit.
#   delete   delete the VM or slice.
#
# --dry-run prints the gcloud commands instead of running them.
# Example (configs/cifar10.py measures FID during training, on every worker: they all read the
# Inception weights, converted once where torch is installed with python -m ddgan_jax.fid convert):
#   launch/tpu_vm.sh up --name=ddgan-v4-32 --zone=us-central2-b --accelerator=v4-32 \
#     --version=tpu-ubuntu2204-base --spot --config=configs/cifar10.py \
#     --workdir=gs://my-bucket/ddgan_cifar10 -- --config.data.data_dir=gs://my-bucket/tfds \
#     --config.eval.inception_weights=gs://my-bucket/fid_inception.npz
set -euo pipefail

# Paths on the workers, expanded there.
# shellcheck disable=SC2016
readonly LOG='$HOME/ddgan_jax_train.log'
# shellcheck disable=SC2016
readonly PID='$HOME/ddgan_jax_train.pid'
# shellcheck disable=SC2016
readonly VENV='$HOME/ddgan_venv'
readonly SRC_TGZ=/tmp/ddgan_jax_src.tgz

SCRIPT=tpu_vm.sh
# shellcheck source=launch/lib.sh
source "$(dirname "$0")/lib.sh"

dry_run=0 command='' name='' zone='' accelerator='' version='' capacity='' config='' workdir=''
worker=0 extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) capacity=--spot ;;
    --preemptible) capacity=--preemptible ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --worker=*) worker=${1#*=} ;;
    --) shift; extra=("$@"); break ;;
    create|install|train|up|logs|stop|delete)
      [[ -z $command ]] || die "two commands given: $command and $1"
      command=$1 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ -n $command ]] || die 'no command: use one of create, install, train, up, logs, stop, delete'
need name zone
tpu=(gcloud compute tpus tpu-vm)
ssh_all=("${tpu[@]}" ssh "$name" --zone="$zone" --worker=all)

create() {
  need accelerator version
  local args=("${tpu[@]}" create "$name" --zone="$zone" --accelerator-type="$accelerator"
              --version="$version")
  if [[ -n $capacity ]]; then args+=("$capacity"); fi
  run "${args[@]}"
}

install() {
  local repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  run tar -C "$repo" --exclude=.git -czf "$SRC_TGZ" .
  run "${tpu[@]}" scp "$SRC_TGZ" "$name:$SRC_TGZ" --zone="$zone" --worker=all
  run "${ssh_all[@]}" --command="set -e; sudo apt-get update -q; \
sudo apt-get install -y -q python3.11 python3.11-venv; rm -rf \$HOME/ddgan_jax; \
mkdir \$HOME/ddgan_jax; tar -C \$HOME/ddgan_jax -xzf $SRC_TGZ; python3.11 -m venv $VENV; \
$VENV/bin/pip install -q -U pip; $VENV/bin/pip install -q -e \"\$HOME/ddgan_jax[tpu]\""
}

train() {
  need config workdir
  local flags
  flags=$(printf ' %q' --distributed --config="$config" --workdir="$workdir" "${extra[@]}")
  run "${ssh_all[@]}" --command="cd \$HOME/ddgan_jax; \
if [ -f $PID ] && kill -0 \$(cat $PID) 2>/dev/null; then \
echo \"\$(hostname): already training (pid \$(cat $PID))\"; exit 1; fi; \
setsid nohup $VENV/bin/python -m ddgan_jax.main$flags > $LOG 2>&1 < /dev/null & \
echo \$! > $PID; echo \"\$(hostname): started, log $LOG\""
}

up() {
  need accelerator version config workdir
  local state=''
  if [[ $dry_run == 1 ]]; then
    echo "# (the VM's state decides: READY skips create, PREEMPTED deletes it first)"
    run "${tpu[@]}" describe "$name" --zone="$zone" --format='value(state)'
  else
    state=$("${tpu[@]}" describe "$name" --zone="$zone" --format='value(state)' 2>/dev/null || true)
  fi
  case $state in
    READY) echo "$name is READY: reusing it." ;;
    '') create ;;
    *) echo "$name is $state: deleting and creating it again."; delete; create ;;
  esac
  install
  train
}

logs() {
  run "${tpu[@]}" ssh "$name" --zone="$zone" --worker="$worker" --command="tail -n 100 -F $LOG"
}

stop() {
  run "${ssh_all[@]}" --command="if [ -f $PID ]; then kill -TERM \$(cat $PID) || true; fi"
}

delete() {
  run "${tpu[@]}" delete "$name" --zone="$zone" --quiet
}

"$command"
