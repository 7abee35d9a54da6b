"""gta-diffusion: GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free
guidance), training and augmentation (GTA Sec. 4), plus the SynthER baseline network.

Heavy modules (torch) are imported on use: ``from gta_diffusion.train import Trainer``,
``from gta_diffusion.augment import augment, AugmentConfig``.
"""

from gta_diffusion._version import __version__

__all__ = ["__version__"]
