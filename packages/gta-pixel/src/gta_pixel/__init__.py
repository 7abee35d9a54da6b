"""gta-pixel: GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation."""

from gta_pixel._version import __version__

__all__ = ["__version__"]
