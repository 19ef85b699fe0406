"""Denoising Diffusion GANs in JAX/Flax."""

from ddgan_jax.sampler import load_sampler

__all__ = ['load_sampler']
