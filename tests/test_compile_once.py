"""The training step's programs and the sampler compile once, across steps and calls."""

import jax

from ddgan_jax import compilation
from ddgan_jax import diffusion
from ddgan_jax import models
from ddgan_jax import sampling
from ddgan_jax import train
from tests.configs import tiny


def test_train_step_and_sampler_compile_once(tmp_path):
  config = tiny.get_config()
  config.training.num_steps = 8
  config.training.lazy_reg = 2
  config.training.sample_every = 3
  with compilation.CompileCounter() as counter:
    state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 8
  # 8 steps, 4 of them with R1 (steps.applies_r1): the R1 terms, the zeros in their place and the
  # iteration are one program each; grids at steps 3 and 6; checkpoints at 3, 6 and 8.
  for program in ('r1_step', 'zero_r1_step', 'iteration_step'):
    assert counter.counts[f'jit({program})'] == 1, counter.counts
  assert counter.counts['jit(sample_batch)'] == 1, counter.counts

  generate = sampling.make_generate_fn(config, models.build_generator(config),
                                       diffusion.schedule_from_config(config), sampling.make_mesh())
  variables = state.generator_variables(ema=True)
  generate(variables, jax.random.PRNGKey(0), 5)
  with compilation.CompileCounter() as counter:
    generate(variables, jax.random.PRNGKey(1), 40)
    generate(variables, jax.random.PRNGKey(2), 3)
  assert counter.counts['jit(sample_batch)'] == 0, counter.counts
