"""gta-diffusion: GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Net, classifier-free guidance), training and augmentation, plus the S4RL and SynthER baselines."""

__version__ = "0.1.0"
