"""Runs the official DDGAN training loop body (PyTorch) with injected random draws.

A test helper, not a test module: ``tests/test_parity.py`` runs it live, and

    DDGAN_OFFICIAL_SRC=/path/to/official python -m tests.official_loop tests/data/official_iteration.npz

writes the fixture that test reads without torch. ``DDGAN_OFFICIAL_SRC`` is a folder holding the
official repository's ``score_sde/`` and ``EMA.py`` (NVlabs/denoising-diffusion-gan at 6818ded).
Its networks and EMA wrapper are imported unmodified; the only stand-in is ``score_sde.op``, whose
import would compile CUDA extensions: it is replaced by the pure-PyTorch ``upfirdn2d`` below (the
networks import nothing else from it). The loop body follows ``train_ddgan.py`` step by step, with
every torch random draw (t, both forward noises, z, posterior noise, for the D and the G step)
taken from arrays instead.

Every array here is in the official NCHW layout.
"""

import os
import sys
import types

import numpy as np

from tests import test_convert

ITERATIONS = 3
SNAPSHOTS = (1, 3)
_INIT_SEED, _DRAW_SEED = 0, 1


def parity_config(r1_scale_by_interval: bool = False):
  """The tiny networks of ``test_convert._tiny_config`` at half width, with lazy_reg 2.

  The widths (nf 4, ngf 2) keep the fixture small; R1 applies at iterations 0 and 2.
  """
  config = test_convert._tiny_config(nf=4, ngf=2)  # pylint: disable=protected-access
  t = config.training
  t.batch_size, t.lazy_reg, t.r1_gamma, t.r1_scale_by_interval = 4, 2, 0.5, r1_scale_by_interval
  config.optim.ema_decay = 0.9
  config.optim.lr_decay = False  # Within the first epoch the official learning rate is constant.
  return config


def _official_args(config) -> types.SimpleNamespace:
  m = config.model
  return types.SimpleNamespace(
      image_size=m.image_size, num_channels=m.num_channels, num_channels_dae=m.nf,
      ch_mult=list(m.ch_mult), num_res_blocks=m.num_res_blocks,
      attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
      resamp_with_conv=m.resamp_with_conv, conditional=m.conditional, fir=m.fir,
      fir_kernel=list(m.fir_kernel), skip_rescale=m.skip_rescale, resblock_type=m.resblock_type,
      progressive=m.progressive, progressive_input=m.progressive_input,
      progressive_combine=m.progressive_combine, embedding_type=m.embedding_type,
      fourier_scale=m.fourier_scale, not_use_tanh=not m.use_tanh, centered=m.centered,
      nz=m.nz, z_emb_dim=m.z_emb_dim, n_mlp=m.n_mlp)


def _upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
  """Zero-insert by ``up``, pad (pad[0] before, pad[1] after) both axes, FIR, keep every ``down``."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  n, c, h, w = x.shape
  x = x.reshape(n * c, 1, h, w)
  if up > 1:
    x = F.pad(x[:, :, :, None, :, None], (0, up - 1, 0, 0, 0, up - 1))
    x = x.reshape(n * c, 1, h * up, w * up)
  x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
  x = F.conv2d(x, torch.flip(kernel, (0, 1))[None, None].to(x.dtype))
  x = x[:, :, ::down, ::down]
  return x.reshape(n, c, x.shape[2], x.shape[3])


def load_official(src: str) -> types.SimpleNamespace:
  """Imports NCSNpp, Discriminator_small and EMA from the official sources in ``src``."""
  if src not in sys.path:
    sys.path.insert(0, src)
  op = types.ModuleType('score_sde.op')
  op.upfirdn2d = _upfirdn2d
  sys.modules['score_sde.op'] = op
  from score_sde.models.discriminator import Discriminator_small  # pylint: disable=g-import-not-at-top
  from score_sde.models.ncsnpp_generator_adagn import NCSNpp  # pylint: disable=g-import-not-at-top
  from EMA import EMA  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(NCSNpp=NCSNpp, Discriminator_small=Discriminator_small, EMA=EMA)


def _networks(official, config):
  import torch  # pylint: disable=g-import-not-at-top
  m = config.model
  g = official.NCSNpp(_official_args(config))
  d = official.Discriminator_small(nc=2 * m.num_channels, ngf=m.ngf, t_emb_dim=m.t_emb_dim,
                                   act=torch.nn.LeakyReLU(0.2))
  return g, d


def initial_state_dicts(official, config) -> dict[str, dict[str, np.ndarray]]:
  """Official G and D state dicts, every parameter perturbed by 0.1 N(0, 1)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(_INIT_SEED)
  out = {}
  for name, net in zip('GD', _networks(official, config)):
    out[name] = {k: (v + 0.1 * torch.randn_like(v)).numpy() for k, v in net.state_dict().items()}
  return out


def make_draws(config) -> dict[str, np.ndarray]:
  """The real batch x0 (B, C, H, W) and, per iteration, the D-step and G-step draws.

  Keys: x0; {d,g}_t (I, B) int (each row a permutation of the levels, so t = 0 occurs);
  {d,g}_eps, {d,g}_eps_next, {d,g}_posterior (I, B, C, H, W); {d,g}_z (I, B, nz). The noise
  is float16 (halving the fixture); both implementations compute with its float32 values.
  """
  m, batch = config.model, config.training.batch_size
  rng = np.random.default_rng(_DRAW_SEED)
  shape = (ITERATIONS, batch, m.num_channels, m.image_size, m.image_size)
  draws = {'x0': rng.uniform(-1, 1, shape[1:]).astype(np.float16)}
  for half in 'dg':
    draws[f'{half}_t'] = np.stack([rng.permutation(batch) % config.diffusion.num_timesteps
                                   for _ in range(ITERATIONS)]).astype(np.int32)
    for name in ('eps', 'eps_next', 'posterior'):
      draws[f'{half}_{name}'] = rng.standard_normal(shape).astype(np.float16)
    draws[f'{half}_z'] = rng.standard_normal((ITERATIONS, batch, m.nz)).astype(np.float16)
  return draws


def _coefficients(config):
  """The official schedule: float64 levels, float32 betas, numpy cumprod, float32 posterior."""
  import torch  # pylint: disable=g-import-not-at-top
  d = config.diffusion
  levels = torch.from_numpy(np.arange(d.num_timesteps + 1, dtype=np.float64) / d.num_timesteps)
  levels = levels * (1.0 - 1e-3) + 1e-3
  alpha_bars = torch.exp(2.0 * (-0.25 * levels**2 * (d.beta_max - d.beta_min)
                                - 0.5 * levels * d.beta_min))
  betas = torch.cat([torch.tensor([1e-8], dtype=torch.float64),
                     1 - alpha_bars[1:] / alpha_bars[:-1]]).float()
  a_s = torch.sqrt(1 - betas)
  a_s_cum = torch.from_numpy(np.cumprod(a_s.numpy()))
  post_betas = betas[1:]
  alphas_cum = torch.cumprod(1 - post_betas, 0)
  alphas_cum_prev = torch.cat([torch.ones(1), alphas_cum[:-1]])
  variance = post_betas * (1 - alphas_cum_prev) / (1 - alphas_cum)
  return types.SimpleNamespace(
      a_s=a_s, sigmas=betas**0.5, a_s_cum=a_s_cum,
      sigmas_cum=torch.from_numpy(np.sqrt((1 - a_s_cum**2).numpy())),
      coef1=post_betas * torch.sqrt(alphas_cum_prev) / (1 - alphas_cum),
      coef2=(1 - alphas_cum_prev) * torch.sqrt(1 - post_betas) / (1 - alphas_cum),
      log_var=torch.log(variance.clamp(min=1e-20)))


def run_official(official, config, init, draws, r1_gamma: float) -> dict[int, dict]:
  """Runs ``ITERATIONS`` official loop bodies from ``init`` with the injected ``draws``, in float64.

  The networks, schedule coefficients and draws are cast to float64 (the official schedule's
  float32 betas and the float32 timestep embedding keep their float32 values), so the result is
  the official computation without float32 rounding. A float32 run is not a reference at the
  1e-5 the parity test asks for: on 2 CPU cores, official float32 runs differ from the float64
  one by up to 9.5e-6 of a tensor's largest magnitude (G's Adam first moment after three
  iterations), and by 1.2e-5 from ours, while ours is within 5.3e-6 of it.

  Args:
    official: ``load_official``'s namespace.
    config: ``parity_config()`` (the networks, optimiser and schedule settings).
    init: ``initial_state_dicts``'s G and D state dicts.
    draws: ``make_draws``'s arrays.
    r1_gamma: the official --r1_gamma.

  Returns:
    {n: groups} after n iterations for n in ``SNAPSHOTS``; groups are G, D, G_exp_avg,
    G_exp_avg_sq, D_exp_avg, D_exp_avg_sq and G_ema, each {state_dict key: array}, plus
    'no_grad': the G parameters whose .grad was None at a G optimiser step (the EMA skips them).
    Arrays are float64.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  netG, netD = _networks(official, config)
  dtype = torch.float64
  netG.load_state_dict({k: torch.from_numpy(v) for k, v in init['G'].items()})
  netD.load_state_dict({k: torch.from_numpy(v) for k, v in init['D'].items()})
  netG, netD = netG.to(dtype), netD.to(dtype)
  for layer in (*netG.modules(), *netD.modules()):  # The timestep embedding is always float32.
    if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
      layer.register_forward_pre_hook(lambda layer, args: (args[0].to(layer.weight.dtype),))
  o = config.optim
  optD = torch.optim.Adam(netD.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps)
  optG = official.EMA(torch.optim.Adam(netG.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2),
                                       eps=o.eps), ema_decay=o.ema_decay)
  c = types.SimpleNamespace(**{k: v.to(dtype) for k, v in vars(_coefficients(config)).items()})
  at = lambda v, t: v[t].view(-1, 1, 1, 1)
  x0 = torch.from_numpy(draws['x0'].astype(np.float32)).to(dtype)
  lazy_reg, batch = config.training.lazy_reg, x0.shape[0]

  def step_draws(half, i):
    get = lambda name: torch.from_numpy(draws[f'{half}_{name}'][i].astype(np.float32)).to(dtype)
    t = torch.from_numpy(draws[f'{half}_t'][i]).long()
    x_t = at(c.a_s_cum, t) * x0 + at(c.sigmas_cum, t) * get('eps')
    x_tp1 = at(c.a_s, t + 1) * x_t + at(c.sigmas, t + 1) * get('eps_next')
    return t, x_t, x_tp1, get('z'), get('posterior')

  def posterior(x0_pred, x_tp1, t, noise):
    mean = at(c.coef1, t) * x0_pred + at(c.coef2, t) * x_tp1
    return mean + (t != 0).to(dtype).view(-1, 1, 1, 1) * torch.exp(0.5 * at(c.log_var, t)) * noise

  def snapshot():
    groups = {'G': netG, 'D': netD}
    out = {k: {n: p.detach().clone().numpy() for n, p in net.named_parameters()}
           for k, net in groups.items()}
    for k, opt in (('G', optG.optimizer), ('D', optD)):
      names = dict(groups[k].named_parameters())
      for moment in ('exp_avg', 'exp_avg_sq'):
        out[f'{k}_{moment}'] = {n: opt.state[p][moment].clone().numpy() for n, p in names.items()}
    out['G_ema'] = {n: optG.optimizer.state[p]['ema'].clone().numpy()
                    for n, p in netG.named_parameters()}
    return out

  results, no_grad = {}, set()
  for global_step in range(ITERATIONS):
    for p in netD.parameters():
      p.requires_grad = True
    netD.zero_grad()
    t, x_t, x_tp1, z, noise = step_draws('d', global_step)
    x_t.requires_grad = True
    d_real = netD(x_t, t, x_tp1.detach()).view(-1)
    F.softplus(-d_real).mean().backward(retain_graph=True)
    if global_step % lazy_reg == 0:
      (grad_real,) = torch.autograd.grad(d_real.sum(), x_t, create_graph=True)
      penalty = grad_real.view(batch, -1).norm(2, dim=1).pow(2).mean()
      (r1_gamma / 2 * penalty).backward()
    x_pos = posterior(netG(x_tp1.detach(), t, z), x_tp1, t, noise)  # G is not detached here.
    F.softplus(netD(x_pos, t, x_tp1.detach()).view(-1)).mean().backward()
    optD.step()

    for p in netD.parameters():
      p.requires_grad = False
    netG.zero_grad()
    t, _, x_tp1, z, noise = step_draws('g', global_step)
    x_pos = posterior(netG(x_tp1.detach(), t, z), x_tp1, t, noise)
    F.softplus(-netD(x_pos, t, x_tp1.detach()).view(-1)).mean().backward()
    no_grad |= {n for n, p in netG.named_parameters() if p.grad is None}
    optG.step()
    if global_step + 1 in SNAPSHOTS:
      results[global_step + 1] = snapshot()
  for groups in results.values():
    groups['no_grad'] = sorted(no_grad)
  return results


def fixture_arrays(official) -> dict[str, np.ndarray]:
  """Everything ``tests/data/official_iteration.npz`` holds (see tests/data/README.md)."""
  config = parity_config()
  init, draws = initial_state_dicts(official, config), make_draws(config)
  out = {f'init/{k}/{n}': v for k, sd in init.items() for n, v in sd.items()}
  out.update({f'draws/{k}': v for k, v in draws.items()})
  gamma, lazy_reg = config.training.r1_gamma, config.training.lazy_reg
  for run, r1_gamma, keep in (('plain', gamma, SNAPSHOTS),
                              ('r1_by_interval', gamma * lazy_reg, (ITERATIONS,))):
    for n, groups in run_official(official, config, init, draws, r1_gamma).items():
      if n not in keep:
        continue
      if groups.pop('no_grad'):
        raise AssertionError('A G parameter got no gradient; the official EMA would skip it.')
      for g, sd in groups.items():
        out[f'{run}/{n}/{g}'] = np.concatenate(
            [sd[k].ravel() for k in init[g[0]]]).astype(np.float32)
  return out


def read_fixture(path: str):
  """Reads ``fixture_arrays``' file back as (init, draws, {run: {n: groups}}), like ``run_official``."""
  data = np.load(path)
  init = {net: {k.split('/', 2)[2]: data[k] for k in data.files if k.startswith(f'init/{net}/')}
          for net in 'GD'}
  draws = {k.split('/', 1)[1]: data[k] for k in data.files if k.startswith('draws/')}
  runs = {}
  for key in data.files:
    if key.startswith(('init/', 'draws/')):
      continue
    run, n, group = key.split('/')
    like = init[group[0]]
    pieces = np.split(data[key], np.cumsum([v.size for v in like.values()])[:-1])
    runs.setdefault(run, {}).setdefault(int(n), {})[group] = {
        k: piece.reshape(v.shape) for (k, v), piece in zip(like.items(), pieces)}
  return init, draws, runs

if __name__ == '__main__':
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  np.savez_compressed(sys.argv[1], **fixture_arrays(load_official(os.environ['DDGAN_OFFICIAL_SRC'])))
