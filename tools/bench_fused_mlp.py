"""Micro-benchmark of the fused MLP forward kernel (``gta-rl train --fused-mlp``) on its gradient-free passes, CUDA.

Times one gradient-free pass of a stacked 256-256 MLP at HalfCheetah's sizes, batch 1024, as TD3+BC's target
networks run it: the twin critics (input 23, one output, the two critics of a seed sharing their input) and
the actor (input 17, 6 outputs), for 1 and 8 seeds. "compiled" is gta-rl's ``--bf16`` path under torch.compile
(cuBLAS bf16 products, inductor's fused bias/ReLU and head kernels, the weight casts); "fused" is the one
Triton kernel of ``gta_rl.kernels.fused_mlp``. Both are timed as replays of a CUDA graph holding 50 calls (GPU time
per call, no launch overhead), best of 5. Also prints each path's largest error against float64.

    python tools/bench_fused_mlp.py
"""

from __future__ import annotations

import functools
import sys
import time

import torch

from gta_data.accel.cuda_graph import inductor_options
from gta_rl.kernels import fused_mlp
from gta_rl.nets import BF16, FUSED, StackedMLP, mlp_generators, twin_input


def graph_time_us(fn, reps: int = 50) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best / reps * 1e6


def main() -> None:
    if not fused_mlp.available():
        sys.exit("bench_fused_mlp.py needs a CUDA device and Triton")
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True  # as gta-rl train --tf32 --bf16 (the compiled actor output layer)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch 1024, GPU time per call")
    print(f"{'network':8} {'seeds':>5} {'compiled, us':>13} {'fused, us':>10} {'err compiled':>13} {'err fused':>10}")
    for name, seeds, k0, out, shared in [("critic", 8, 23, 1, 2), ("critic", 1, 23, 1, 2),
                                         ("actor", 8, 17, 6, 1), ("actor", 1, 17, 6, 1)]:
        members = seeds * shared
        net = StackedMLP(mlp_generators(list(range(seeds)), name, shared), [k0, 256, 256, out], arithmetic=BF16).to(dev)
        fused_net = StackedMLP(mlp_generators(list(range(seeds)), name, shared), [k0, 256, 256, out],
                               arithmetic=FUSED).to(dev)  # the same weights
        x = torch.randn(seeds, 1024, k0, device=dev)

        def forward(x=x, net=net, shared=shared):
            with torch.no_grad():
                return net(x, shared=shared)

        compiled = torch.compile(forward, dynamic=False, options=inductor_options())
        h = twin_input(x, shared).double() if shared != 1 else x.double()
        for i, layer in enumerate(net.layers):
            h = torch.bmm(h, layer.weight.double()) + layer.bias.double()
            h = torch.relu(h) if i < 2 else h
        err_c = float((compiled().double() - h).abs().max())
        t_c = graph_time_us(compiled)
        fused = functools.partial(forward, net=fused_net)
        err_f = float((fused().double() - h).abs().max())
        t_f = graph_time_us(fused)
        assert members == net.num_members
        print(f"{name:8} {seeds:5d} {t_c:13.1f} {t_f:10.1f} {err_c:13.2e} {err_f:10.2e}", flush=True)


if __name__ == "__main__":
    main()
