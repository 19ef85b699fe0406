"""Default DDGAN configuration: the CIFAR-10 architecture with small, CPU-friendly training settings.

Dataset configs (``cifar10.py``, ``celeba_256.py``, ...) start from this one and override only what
differs. Every field is read somewhere; there are no placeholders.

Run (any config file works the same way):

    python -m ddgan_jax.main --config=configs/default.py --workdir=/tmp/ddgan_default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()
  config.seed = 1024

  # Generator (NCSN++ with latent z) and discriminator architecture.
  model = config.model = ml_collections.ConfigDict()
  model.generator = 'ncsnpp'  # 'ncsnpp' (images) or 'mlp' (toy 2-D data).
  model.discriminator = 'small'  # 'small' (32x32), 'large' (256x256) or 'mlp'.
  model.image_size = 32
  model.num_channels = 3
  model.nf = 128  # The official --num_channels_dae.
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.dropout = 0.0
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = 'biggan'  # 'biggan', 'biggan_oneadagn' or 'ddpm'.
  model.progressive = 'none'  # 'none', 'output_skip' or 'residual'.
  model.progressive_input = 'residual'  # 'none', 'input_skip' or 'residual'.
  model.progressive_combine = 'sum'  # 'sum' or 'cat'.
  model.embedding_type = 'positional'  # 'positional' or 'fourier'.
  model.fourier_scale = 16.0
  model.use_tanh = True  # The official --not_use_tanh, inverted.
  model.centered = True  # Data in [-1, 1]; False means [0, 1] (the official flag is inverted).
  model.init_scale = 0.0
  model.nz = 100
  model.z_emb_dim = 256
  model.n_mlp = 4
  model.ngf = 64  # Discriminator width.
  model.t_emb_dim = 256  # Discriminator time-embedding width.
  model.mlp_hidden = 512  # Width of the 2-D toy MLPs.
  model.mlp_layers = 3  # Hidden layers of the 2-D toy MLPs.

  # Noise schedule.
  diffusion = config.diffusion = ml_collections.ConfigDict()
  diffusion.num_timesteps = 4
  diffusion.beta_min = 0.1
  diffusion.beta_max = 20.0
  diffusion.schedule = 'vp'  # 'vp' or 'geometric'.

  # Training loop.
  training = config.training = ml_collections.ConfigDict()
  training.batch_size = 64  # Global batch, all devices and hosts together.
  training.num_epochs = 1800  # Horizon of the cosine learning-rate decay.
  training.num_steps = 1000  # Global steps to train; -1 means num_epochs full epochs.
  training.r1_gamma = 0.02
  training.lazy_reg = 15  # R1 every lazy_reg D steps; 1 means every step.
  training.r1_scale_by_interval = False  # StyleGAN2 scaling (gamma * lazy_reg); the reference does not.
  training.d_steps = 1  # D steps per G step (n_critic), each with fresh draws; the reference: 1.
  training.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16'. Params stay float32.
  training.log_every = 50
  training.sample_every = 1000
  training.profile_steps = 0  # Steps to trace with the profiler after the first log; 0 turns it off.
  # Every eval_every steps, score eval.num_samples_train EMA samples with the dataset's main metric
  # (FID for images), log it and keep the best checkpoint in checkpoints_best/; 0 turns it off.
  training.eval_every = 0

  # Optimisers.
  optim = config.optim = ml_collections.ConfigDict()
  optim.lr_g = 1.6e-4
  optim.lr_d = 1.25e-4
  optim.beta1 = 0.5
  optim.beta2 = 0.9
  optim.eps = 1e-8
  optim.lr_decay = True  # Cosine decay per epoch to optim.lr_min (the official --no_lr_decay, inverted).
  optim.lr_min = 1e-5
  optim.ema_decay = 0.9999

  # Input pipeline.
  data = config.data = ml_collections.ConfigDict()
  data.dataset = 'cifar10'
  data.data_dir = ''  # TFDS data dir ('' = $TFDS_DATA_DIR or the TFDS default); gs:// works.
  data.download = True  # Whether TFDS may download and prepare the dataset.
  data.path = ''  # Folder of images ('image_folder') or .npz file ('npz').
  data.random_flip = True
  data.shuffle_buffer = 10_000
  data.prefetch = 2
  data.num_examples = -1  # Keep only the first N training examples; -1 keeps all.
  data.toy = '25gaussians'  # For dataset 'toy2d': '25gaussians' or '8gaussians'.

  # Checkpoints.
  checkpoint = config.checkpoint = ml_collections.ConfigDict()
  checkpoint.every_steps = 1000
  checkpoint.max_to_keep = 3
  checkpoint.keep_every_steps = 0  # Also keep every checkpoint whose step is a multiple; 0: none.

  # Sampling (--mode=sample and ddgan_jax.load_sampler).
  sampling = config.sampling = ml_collections.ConfigDict()
  sampling.num_images = 64
  sampling.batch_size = 64  # Part of the seed: the same seed at another batch size differs.
  sampling.step = -1  # The checkpoint to sample; -1: the newest.
  sampling.format = 'npz'  # 'npz': uint8 NHWC shards; 'png': one file per image.
  sampling.shard_size = 10_000  # Images per .npz shard (the most the host holds at once).
  # EMA samples in the pictures: the grid logged every training.sample_every steps, and the one
  # --mode=sample writes beside the samples.
  sampling.grid_images = 64

  # Evaluation (--mode=eval).
  evaluation = config.eval = ml_collections.ConfigDict()
  evaluation.num_samples = 2500
  evaluation.num_samples_train = 1000  # Samples scored every training.eval_every steps.
  evaluation.step = -1  # The checkpoint --mode=eval scores; -1: the newest.
  evaluation.batch_size = 500
  evaluation.cache_dir = '~/.cache/ddgan_jax'  # Digits classifier, Inception weights, FID refs.
  evaluation.confidence = 0.9  # Digits: a class probability this high counts as confident.
  # Digits: also D's separation of real and fake pairs and chains from real data, per level.
  evaluation.per_level = False
  # Images: the FID Inception (see ddgan_jax/evaluation/image_metrics.py and ddgan_jax/fid.py).
  evaluation.inception_weights = ''  # Converted .npz (or .pth); '' = cache_dir, then download.
  evaluation.inception_dtype = 'float32'  # Or 'bfloat16'; the features are float32 either way.
  evaluation.inception_batch_size = 200  # Images per Inception forward pass over all devices.
  evaluation.fid_reference = ''  # Statistics .npz (mu, sigma); '' = computed from the train set.
  # How uint8 samples reach the metrics: 'png' (lossless, as saved PNGs) or 'jpeg' (saved and read
  # back as the official test_ddgan.py did: torchvision's save_image to .jpg, PIL quality 75).
  evaluation.image_format = 'png'

  return config
