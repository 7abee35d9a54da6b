"""gta-pixel: GTA pixel pipeline: DrQ+BC encoder pretraining, latent projection and latent-space augmentation."""

__version__ = "0.1.0"
