"""DDGAN networks (Flax Linen, NHWC) and the builders that pick them from a config."""
