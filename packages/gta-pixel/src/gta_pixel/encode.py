"""Stage 2 of GTA's pixel protocol: project a pixel store into the latent space of a pretrained DrQ+BC seed.

SynthER (README, "pixel-based experiments") derives the latent representations from the trunks of the actor
and the critic; GTA (appendix C.4) follows its protocol. Each stacked observation becomes
z = [z_actor, z_critic] (2 x 50 = 100 numbers: the LayerNorm + tanh trunk outputs of the frozen encoder's
features), and the dataset becomes an ordinary gta-data trajectory store (observations and next observations
100-d, the store's actions, rewards, terminals and time-outs, the same episodes), which gta-diffusion trains on
and augments unchanged and :mod:`gta_pixel.finetune` reads back. No random shift at encoding time (DrQ+BC acts
on unshifted frames). The networks compute in the run's recorded arithmetic (bf16 autocast of the encoder and
trunk products where it was pretrained so, see :mod:`gta_pixel.runs`), the arithmetic ``evaluate`` acts in; the
store's provenance says which (``arithmetic``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gta_data import StoreWriter, TrajectoryStore, Transitions
from gta_data.accel.devices import resolve_device
from gta_pixel import runs
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.errors import RunError
from gta_pixel.pixelstore import PixelData, PixelStore, frame_rows, stack_indices


def task_env_id(task: dict) -> str:
    """The ``env_id`` of a latent store: ``pixel:<task>`` (``pixel:walker_walk``, ``pixel:gym:Walker2d-v5``,
    ``pixel:fake``); not a gymnasium id, since these stores are evaluated through their pixel task."""
    kind = task.get("kind")
    if kind == "dmc":
        return f"pixel:{task['domain']}_{task['task']}"
    if kind == "gym":
        return f"pixel:gym:{task['env_id']}"
    return f"pixel:{kind}"


def frame_stacks(episode_ends: np.ndarray, frame_stack: int) -> np.ndarray:
    """[F, K] the frame rows of the stacked observation that ends at each frame (every frame once)."""
    index = stack_indices(episode_ends, frame_stack, nstep=1)
    rows = frame_rows(episode_ends)  # [N] frame row of each step's observation
    out = np.zeros((len(rows) + len(episode_ends), frame_stack), dtype=np.int64)
    out[rows] = index.obs_frames
    out[rows + 1] = index.next_frames  # with n = 1 every step is valid: the stack ending at frame t + 1
    return out


@torch.no_grad()
def latents(agent: DrQBCStack, frames: torch.Tensor, stacks: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """[F, 2 feature_dim] float32 latents [z_actor, z_critic] of seed 0 of ``agent`` for each row of ``stacks``
    (frame rows into ``frames`` [F, C, H, W] uint8, on the agent's device)."""
    if agent.num_seeds != 1:
        raise ValueError("latents() encodes with a one-seed agent")
    out = []
    device = frames.device
    for start in range(0, len(stacks), batch_size):
        rows = torch.as_tensor(stacks[start:start + batch_size], device=device)  # [B, K]
        obs = frames[rows].flatten(1, 2)[:, None]  # [B, 1, K C, H, W]
        z_actor, z_critic = agent.latents(agent.encode(obs))  # [1, B, 50] each
        out.append(torch.cat([z_actor[0], z_critic[0]], -1).float().cpu())
    return torch.cat(out).numpy()


def latent_transitions(data: PixelData, z: np.ndarray) -> Transitions:
    """The latent trajectory rows of a pixel dataset from the latents ``z`` [F, D] of its frame stacks."""
    rows = frame_rows(data.episode_ends)
    return Transitions(observations=z[rows], actions=data.actions, rewards=data.rewards,
                       next_observations=z[rows + 1], terminals=data.terminals, timeouts=data.timeouts)


def encode(run: Path, pixels: Path, out: Path, *, seed: int | None = None, device: str = "auto",
           batch_size: int = 1024, overwrite: bool = False) -> TrajectoryStore:
    """Write the latent trajectory store of ``pixels`` under seed ``seed`` of ``run`` (default: its first)."""
    dev = resolve_device(device, RunError)
    config = runs.read_config(run)
    seed = int(config["seeds"][0]) if seed is None else int(seed)
    agent, config, _ = runs.load_agent(run, dev, seeds=[seed])
    store = PixelStore.open(pixels)
    if (store.frame_stack * store.frame_shape[0], *store.frame_shape[1:]) != tuple(config["obs_shape"]):
        raise RunError(f"{pixels} has frames {store.frame_shape} x {store.frame_stack}; the run in {run} was "
                       f"trained on stacked observations {tuple(config['obs_shape'])}")
    if store.act_dim != config["act_dim"]:
        raise RunError(f"{pixels} has {store.act_dim}-d actions; the run in {run} has {config['act_dim']}")
    data = store.load(states=False)
    frames = torch.as_tensor(data.frames, device=dev)
    z = latents(agent, frames, frame_stacks(data.episode_ends, store.frame_stack), batch_size)
    dim = z.shape[1] // 2
    ref = store.ref_scores
    ckpt = Path(run) / runs.CHECKPOINT
    provenance = {"source": "gta-pixel encode", "pixel_store": str(Path(pixels).resolve()),
                  "pixel_provenance": store.provenance, "run": str(Path(run).resolve()),
                  "checkpoint_sha256": runs.file_sha256(ckpt), "run_stage": config["stage"], "seed": seed,
                  "update": int(agent.step), "latent": "trunk", "arithmetic": {"bf16": agent.bf16}}
    with StoreWriter(out, env_id=task_env_id(store.task), obs_dim=z.shape[1], act_dim=store.act_dim,
                     ref_min_score=None if ref is None else ref[0], ref_max_score=None if ref is None else ref[1],
                     provenance=provenance, overwrite=overwrite,
                     observation_layout=[{"key": "z_actor", "start": 0, "stop": dim},
                                         {"key": "z_critic", "start": dim, "stop": 2 * dim}],
                     attrs={"pixel_task": store.task}) as writer:
        writer.add_transitions(latent_transitions(data, z), data.episode_ends)
    return TrajectoryStore.open(out)
