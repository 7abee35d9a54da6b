"""GPU kernels of gta-rl written in Triton (an optional dependency, ``gta-rl[fused]``): :mod:`.fused_mlp`, every pass
of a stacked two-hidden-layer MLP in one kernel (``--fused-mlp``), with the Triton source in :mod:`._triton`. The
readable reference they are tested against is :class:`gta_rl.nets.StackedMLP`'s bf16 path."""
