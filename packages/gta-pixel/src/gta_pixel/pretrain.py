"""Stage 1 of GTA's pixel protocol (appendix C.4, after SynthER): pretrain DrQ+BC on a pixel store.

Every seed trains in one stacked network (:class:`gta_pixel.drqbc_fast.DrQBCStack`) on frames resident on the
device; the step runs eagerly, compiled, or replayed from a CUDA graph (:class:`gta_rl.fast.StepRunner`). The
run directory (:mod:`gta_pixel.runs`) is checkpointed atomically every ``checkpoint_every`` updates and at the
end; ``resume`` continues from the checkpoint exactly (every draw is a function of seed and step) in the run's
recorded arithmetic (``bf16``: the run's config is its one source, see :mod:`gta_pixel.runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from gta_data.accel.devices import resolve_device
from gta_pixel import runs
from gta_pixel.drqbc import DrQBCConfig
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.errors import RunError
from gta_pixel.pixelstore import PixelStore
from gta_pixel.replay import PixelReplay
from gta_rl.checkpoint import load_checkpoint
from gta_rl.fast import MetricAccumulator, StepRunner


def load_replay(store: PixelStore, config: DrQBCConfig, device: torch.device) -> PixelReplay:
    """The store's frames and n-step targets on ``device``, stacked as ``config`` says."""
    return PixelReplay.from_data(store.load(states=False), frame_stack=config.frame_stack, nstep=config.nstep,
                                 discount=config.discount, device=device)


def pretrain(
    pixels: Path,
    out: Path,
    *,
    seeds: Sequence[int] = (0,),
    steps: int = 550_000,
    config: DrQBCConfig = DrQBCConfig(),
    device: str = "auto",
    bf16: bool | None = None,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graph: bool = False,
    log_every: int = 1000,
    checkpoint_every: int = 10_000,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, dict[str, list[float]] | None], None] | None = None,
) -> DrQBCStack:
    """Train DrQ+BC for ``steps`` gradient updates per seed; returns the agent. ``on_progress(step, metrics)``
    is called after every update (metrics: per-seed means, at logging steps only). ``bf16``: autocast of the
    encoder and trunk products for a new run (default off); a resume keeps the run's and refuses another.
    ``stop()``, asked after every update, ends the run with a checkpoint of that step (a resume continues it)."""
    out = Path(out)
    if min(steps, log_every, checkpoint_every) < 1:
        raise RunError("steps, log and checkpoint intervals must be positive")
    if min(config.nstep, config.batch_size, config.hidden_dim, config.feature_dim, config.std_duration) < 1:
        raise RunError("nstep, batch size, network widths and the std schedule's duration must be positive")
    runs.check_out(out, resume)
    dev = resolve_device(device, RunError)
    saved = runs.read_config(out) if resume else None
    if saved is not None:
        config, seeds = runs.drqbc_config(saved), [int(s) for s in saved["seeds"]]
        if bf16 is not None and bf16 != runs.run_bf16(saved):
            was = runs.run_bf16(saved)
            raise RunError(f"the run in {out} was pretrained {'with' if was else 'without'} bf16; a resume keeps a "
                           f"run's arithmetic (pass {'--bf16' if was else '--no-bf16'} or neither)")
        bf16 = runs.run_bf16(saved)
    bf16 = bool(bf16)
    store = PixelStore.open(pixels)
    config = replace(config, frame_stack=store.frame_stack)
    replay = load_replay(store, config, dev)
    agent = DrQBCStack(replay.obs_shape, replay.act_dim, list(seeds), config, dev, bf16=bf16,
                       channels_last=channels_last, init=saved is None)
    if saved is not None:
        if tuple(saved["obs_shape"]) != replay.obs_shape or saved["act_dim"] != replay.act_dim:
            raise RunError(f"{pixels} does not match the run in {out} (frames or actions differ)")
        state, _ = load_checkpoint(out / runs.CHECKPOINT, dev)
        agent.load_full_state_dict(state)
        runs.drop_metrics_after(out, int(agent.step))
    else:
        out.mkdir(parents=True, exist_ok=True)
        runs.write_config(out, runs.new_config(
            "pretrain", config, agent, store.task, store.ref_scores,
            pixels={"path": str(Path(pixels).resolve()), "num_steps": store.num_steps,
                    "num_episodes": store.num_episodes, "provenance": store.provenance},
            steps=steps, batch_size=config.batch_size,
            arithmetic={"bf16": bf16, "channels_last": channels_last, "compile": compile, "cuda_graph": cuda_graph}))
    runner = StepRunner(agent, replay, config.batch_size, compile=compile, cuda_graph=cuda_graph)
    acc = MetricAccumulator()
    start = int(agent.step)
    for step in range(start, steps):
        acc.add(runner(step))
        done = step + 1
        logged = None
        if done % log_every == 0 or done == steps:
            logged = acc.pop()
            runs.append_metrics(out, done, agent.seed_list, logged)
        stopping = stop is not None and stop()
        if done % checkpoint_every == 0 or done == steps or stopping:
            runs.save(out, agent, {"stage": "pretrain", "step": done})
        if on_progress is not None:
            on_progress(done, logged)
        if stopping:
            break
    return agent

