"""Augmentation baselines of the GTA paper (Sec. 5.1, appendix C.1): S4RL and SynthER.

``s4rl``: Gaussian noise on the states of the original data (numpy only, no torch).
``synther``: unconditional transition-level EDM on ``[s, a, r, s', terminal]`` vectors with SynthER's
residual MLP, trained with the shared :class:`gta_diffusion.training.Trainer` and sampled with the shared
:func:`gta_diffusion.edm.edm_sampler`. ``cli`` holds the Typer command functions.

Heavy modules are imported on use: ``from gta_diffusion.baselines.synther import train_synther``.
"""
