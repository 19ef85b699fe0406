"""Denoising Diffusion GANs in JAX/Flax."""
