"""Dataset sources behind ``ddgan_jax.input_pipeline.create_dataset``.

``indexed``: the shared, random-access batching (per-epoch permutations, flips, host slices).
``local``: sources that need no network (scikit-learn digits, stacked or not, ``.npz`` arrays,
  image folders).
``tfds_sources``: TensorFlow Datasets sources (CIFAR-10, Stacked-MNIST, CelebA-HQ 256, LSUN Church).
"""
