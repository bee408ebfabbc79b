"""dreamsolo: single-image scene + instance personalization of Stable Diffusion."""

__version__ = "0.1.0"
