"""DrQ+BC update throughput: the eager reference against the stacked fast path, in one process on one device.

Each mode trains on the same synthetic replay (random frames in episodes, V-D4RL's sizes unless ``quick``) and
is timed over ``steps`` updates after ``warmup`` updates (compilation and CUDA-graph capture happen in the
warm-up). Throughput is counted in seed-updates per second: one gradient update of one seed's networks, so a
stack of S seeds doing one step counts S.

- ``reference``: :class:`gta_pixel.drqbc.DrQBC`, one seed after another, as V-D4RL's code runs;
- ``stacked``: :class:`gta_pixel.drqbc_fast.DrQBCStack` in fp32, eager;
- ``stacked-bf16``: with bf16 autocast of the encoder and trunks and channels_last convolutions;
- ``fast``: that, compiled and replayed from a whole-step CUDA graph (CUDA only);
- ``fast-loop``: ``fast`` with one convolution per seed instead of one grouped convolution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from gta_pixel.drqbc import DrQBC, DrQBCConfig, draw_noise
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.replay import PixelReplay
from gta_rl.fast import StepRunner
from gta_rl.rng import SeedStreams

MODES = ("reference", "stacked", "stacked-bf16", "fast", "fast-loop")


@dataclass
class BenchRow:
    mode: str
    seeds: int
    seconds_per_step: float  # one step of every seed (the reference: all seeds one after another)

    @property
    def seed_updates_per_s(self) -> float:
        return self.seeds / self.seconds_per_step


def synthetic_replay(size: int, act_dim: int, episodes: int, length: int, config: DrQBCConfig,
                     device: torch.device, seed: int = 0) -> PixelReplay:
    rng = np.random.default_rng(seed)
    n = episodes * length
    frames = rng.integers(0, 256, (n + episodes, 3, size, size), dtype=np.uint8)
    return PixelReplay(frames, rng.uniform(-1, 1, (n, act_dim)), rng.uniform(0, 1, n), np.ones(n),
                       np.arange(1, episodes + 1) * length, frame_stack=config.frame_stack, nstep=config.nstep,
                       discount=config.discount, device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, steps: int, warmup: int, device: torch.device) -> float:
    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(device)
    return (time.perf_counter() - start) / steps


def bench_mode(mode: str, replay: PixelReplay, seeds: Sequence[int], config: DrQBCConfig, device: torch.device,
               steps: int, warmup: int) -> BenchRow:
    if mode == "reference":
        agents = [DrQBC(replay.obs_shape, replay.act_dim, config, s, device) for s in seeds]
        streams = [SeedStreams(torch.tensor([s], device=device), torch.zeros((), dtype=torch.int64, device=device))
                   for s in seeds]

        def step(i: int) -> None:
            for agent, rng in zip(agents, streams, strict=True):
                rng.step.fill_(i)
                noise = draw_noise(rng, replay.num_rows, config.batch_size, replay.act_dim, config.pad)
                agent.update(replay.batch(noise.rows[0]), noise, i)

        return BenchRow(mode, len(seeds), _time(step, steps, warmup, device))
    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r} ({', '.join(MODES)})")
    fast = mode != "stacked"
    agent = DrQBCStack(replay.obs_shape, replay.act_dim, list(seeds), config, device, bf16=fast, channels_last=fast,
                       grouped_convs=mode != "fast-loop")
    graph = mode.startswith("fast")
    runner = StepRunner(agent, replay, config.batch_size, compile=graph, cuda_graph=graph)
    return BenchRow(mode, len(seeds), _time(runner, steps, warmup, device))


def run_bench(*, device: torch.device, seeds: int = 3, steps: int = 50, warmup: int = 10, quick: bool = False,
              modes: Sequence[str] | None = None) -> list[BenchRow]:
    """Every mode that runs on ``device`` (the ``fast`` ones need CUDA). ``quick``: tiny frames and networks."""
    config = DrQBCConfig()
    size, episodes, length = 84, 10, 100
    if quick:
        config = replace(config, hidden_dim=64, batch_size=16)
        size, episodes, length = 24, 4, 20
    replay = synthetic_replay(size, 6, episodes, length, config, device)
    modes = [m for m in (modes or MODES) if not m.startswith("fast") or device.type == "cuda"]
    return [bench_mode(m, replay, list(range(seeds)), config, device, steps, warmup) for m in modes]
