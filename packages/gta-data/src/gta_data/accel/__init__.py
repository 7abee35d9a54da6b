"""The execution layer the training packages share (gta-rl, gta-diffusion): whole-step CUDA graphs and
torch.compile of a step (:mod:`gta_data.accel.cuda_graph`), and device names (:mod:`gta_data.accel.devices`).

These modules need torch, which gta-data itself does not install (``pip install 'gta-data[torch]'``; the
packages that use them bring it). Nothing is imported here, so ``import gta_data`` stays free of torch.
"""
