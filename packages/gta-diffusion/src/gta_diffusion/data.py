"""Sub-trajectory windows for the GTA diffusion model (GTA appendix A.1, Sec. 4.1 and 4.2).

A window of H transitions is modelled as H+1 rows of ``[s, a, r]`` (``transition_dim = obs + act + 1``):
rows 0..H-1 hold ``(s_t, a_t, r_t)``, row H holds ``s_{t+H}`` (the next state of the last transition) with
its action and reward set to zero; those two padding entries are masked out of the loss
(:func:`loss_mask`). Windows are taken with stride 1 from whole episodes (``gta_data.window_starts``).

Short episodes: an episode with fewer than H transitions yields no window and is *skipped*; the number
of skipped episodes and transitions is recorded in the normaliser (and printed by the CLI). Padding short
episodes would teach the model fake dynamics at the padding boundary and give augmentation source windows
that are partly fake, so we prefer losing those few transitions (choose a smaller H for datasets made of
short episodes).

Condition (Sec. 4.1, Eq. 8): the discounted (gamma = 0.99) return from the window start to the END of the
episode -- for an episode cut by a time limit, to the end of the stored data, without bootstrapping --
multiplied by ``cond_scale`` (0.01 as in the authors' code). Terminal trick (A.1): ``terminal_penalty``
(-100) is added to the reward of a true terminal step before the returns are computed, for the
condition only: the modelled reward channel holds the true rewards, so generated rewards carry no
penalty. A.1 gives the trick for tasks where a terminal is a failure (a fallen Hopper or Walker2d); in
goal-reaching tasks (mazes, kitchen) an episode ends at its success, so by default (``None``,
:func:`resolve_window`) the penalty is 0 there, as the authors' code turns it off for mazes. (With ``penalty_in_reward_channel`` the authors' variant is available; :func:`windows_to_transitions`
then removes the penalty from generated terminal rewards, so it never reaches an augmented store.)

All features are z-scored per dimension with statistics kept in :class:`Normalizer` (saved with the model).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from gta_data import Transitions, window_starts
from gta_diffusion.config import WindowConfig
from gta_diffusion.errors import DiffusionError

FAILURE_TERMINAL_PENALTY = -100.0  # A.1
_GOAL_TASK = re.compile(r"maze|kitchen", re.IGNORECASE)  # PointMaze, AntMaze, maze2d, antmaze, FrankaKitchen


def resolve_window(cfg: WindowConfig, env_id: str) -> WindowConfig:
    """``cfg`` with its terminal penalty decided for ``env_id`` when it is None: A.1's -100 where a terminal
    is a failure, 0 where episodes end at their goal (mazes, kitchen: penalising those terminals would
    condition the successful windows on the lowest returns, and amplified guidance would steer away from
    the goal)."""
    if cfg.terminal_penalty is not None:
        return cfg
    return replace(cfg, terminal_penalty=0.0 if _GOAL_TASK.search(env_id) else FAILURE_TERMINAL_PENALTY)


@dataclass
class Normalizer:
    """Per-dimension z-scoring of ``[s, a, r]`` rows, plus the data facts a trained model depends on."""

    mean: np.ndarray  # [D] float64
    std: np.ndarray  # [D] float64
    obs_dim: int
    act_dim: int
    env_id: str
    skipped_episodes: int = 0
    skipped_transitions: int = 0

    @property
    def transition_dim(self) -> int:
        return self.obs_dim + self.act_dim + 1

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean"], out["std"] = self.mean.tolist(), self.std.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        d = dict(d)
        d["mean"] = np.asarray(d["mean"], dtype=np.float64)
        d["std"] = np.asarray(d["std"], dtype=np.float64)
        return cls(**d)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)


def discounted_returns(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{i=t}^{T_e - 1} gamma^(i-t) r_i for every row t, T_e = end of t's episode (float64).

    Computed as a backward recurrence G_t = r_t + gamma * G_{t+1} that is reset at episode ends, run over
    all episodes at once (one vectorised step per time index, so the cost is the longest episode)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    out = np.zeros_like(rewards)
    carry = np.zeros(len(ends))
    for k in range(int(lengths.max()) if len(lengths) else 0):
        alive = lengths > k  # episodes that have a row k steps before their end
        rows = ends[alive] - 1 - k
        carry[alive] = rewards[rows] + gamma * carry[alive]
        out[rows] = carry[alive]
    return out


def condition_rewards(data: Transitions, cfg: WindowConfig) -> np.ndarray:
    """Rewards with the terminal penalty (A.1) added on true terminal steps, float64 (``cfg`` resolved by
    :func:`resolve_window`)."""
    if cfg.terminal_penalty is None:
        raise DiffusionError("the window config's terminal penalty is undecided: resolve_window(cfg, env_id) first")
    return data.rewards.astype(np.float64) + cfg.terminal_penalty * data.terminals


def row_features(data: Transitions, cfg: WindowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-row features ``[s_t, a_t, r_t]`` [N, D] and the tail row ``[s_{t+1}, 0, 0]`` [N, D] (float32)
    that closes a window whose last transition is row t."""
    rewards = condition_rewards(data, cfg) if cfg.penalty_in_reward_channel else data.rewards
    rows = np.concatenate([data.observations, data.actions, np.asarray(rewards, np.float32)[:, None]], axis=1)
    tail = np.zeros_like(rows)
    tail[:, : data.obs_dim] = data.next_observations
    return rows.astype(np.float32), tail


def fit_normalizer(data: Transitions, episode_ends: np.ndarray, cfg: WindowConfig, env_id: str) -> Normalizer:
    """Statistics over the rows that windows use (the episodes with at least H transitions)."""
    cfg = resolve_window(cfg, env_id)
    ends = np.asarray(episode_ends, dtype=np.int64)
    lengths = np.diff(np.concatenate([[0], ends]))
    keep = lengths >= cfg.horizon
    if not keep.any():
        raise DiffusionError(
            f"no episode has at least horizon={cfg.horizon} transitions (longest: {int(lengths.max())})"
        )
    mask = np.repeat(keep, lengths)
    rows, _ = row_features(data, cfg)
    rows = rows[mask].astype(np.float64)
    # The last window row holds next states, so the state statistics cover them too.
    states = np.concatenate([data.observations[mask], data.next_observations[mask]]).astype(np.float64)
    mean, std = rows.mean(0), rows.std(0)
    mean[: data.obs_dim], std[: data.obs_dim] = states.mean(0), states.std(0)
    std = np.where(std < 1e-6, 1.0, std)  # constant dimensions stay as they are, no division by ~0
    return Normalizer(
        mean=mean, std=std, obs_dim=data.obs_dim, act_dim=data.act_dim, env_id=env_id,
        skipped_episodes=int((~keep).sum()), skipped_transitions=int(lengths[~keep].sum()),
    )


def loss_mask(norm: Normalizer, horizon: int) -> torch.Tensor:
    """[H+1, D] float mask: 1 everywhere except the padding action and reward of the last row."""
    mask = torch.ones(horizon + 1, norm.transition_dim)
    mask[-1, norm.obs_dim :] = 0.0
    return mask


class WindowSet:
    """All stride-1 windows of a store as device tensors, gathered by start index without host syncs.

    ``rows``/``tail`` are the z-scored per-row features; a window starting at row t is
    ``cat(rows[t : t+H], tail[t+H-1])`` -> [H+1, D]; ``cond[t]`` is the scaled conditioning return."""

    def __init__(self, data: Transitions, episode_ends: np.ndarray, norm: Normalizer, cfg: WindowConfig,
                 device: torch.device | str = "cpu") -> None:
        if data.obs_dim != norm.obs_dim or data.act_dim != norm.act_dim:
            raise DiffusionError(
                f"data has obs_dim {data.obs_dim}, act_dim {data.act_dim}; the model expects "
                f"{norm.obs_dim}, {norm.act_dim}"
            )
        cfg = resolve_window(cfg, norm.env_id)
        self.cfg, self.norm, self.device = cfg, norm, torch.device(device)
        self.episode_ends = np.asarray(episode_ends, dtype=np.int64)
        self.starts_np = window_starts(self.episode_ends, cfg.horizon)  # [W]
        if len(self.starts_np) == 0:
            raise DiffusionError(f"no episode has at least horizon={cfg.horizon} transitions")
        rows, tail = row_features(data, cfg)
        returns = discounted_returns(condition_rewards(data, cfg), self.episode_ends, cfg.gamma)
        self.returns_np = returns  # [N] float64, unscaled (with the terminal penalty)
        self.cond_np = (cfg.cond_scale * returns).astype(np.float32)  # [N]
        self.rows = torch.from_numpy(norm.normalize(rows)).to(self.device)  # [N, D]
        self.tail = torch.from_numpy(norm.normalize(tail)).to(self.device)  # [N, D]
        self.tail[:, norm.obs_dim :] = 0.0  # padding entries of the last row are exactly zero
        self.cond = torch.from_numpy(self.cond_np).to(self.device)  # [N]
        self.starts = torch.from_numpy(self.starts_np).to(self.device)  # [W]
        self._offsets = torch.arange(cfg.horizon, device=self.device)

    def __len__(self) -> int:
        return len(self.starts_np)

    def gather(self, starts: torch.Tensor) -> torch.Tensor:
        """z-scored windows [B, H+1, D] for start rows ``starts`` [B] (device tensor)."""
        idx = starts[:, None] + self._offsets  # [B, H]
        return torch.cat([self.rows[idx], self.tail[idx[:, -1]][:, None]], dim=1)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform random batch (with replacement): windows [B, H+1, D] and conditions [B]."""
        pick = torch.randint(len(self), (batch_size,), device=self.device, generator=generator)
        starts = self.starts[pick]
        return self.gather(starts), self.cond[starts]


def windows_to_transitions(windows: np.ndarray, norm: Normalizer, cfg: WindowConfig,
                           terminals: np.ndarray) -> Transitions:
    """Generated windows [B, H+1, D] (de-normalised, original units) -> B*H transitions, window-major.

    Terminals come from the source windows ([B, H] bool), never from the model; each window's last
    transition is marked as a timeout (segment end) unless it is terminal. If the model was trained with
    the penalty in its reward channel, the penalty is removed from generated terminal rewards."""
    windows = np.asarray(windows, dtype=np.float32)
    b, rows, d = windows.shape
    h = rows - 1
    if d != norm.transition_dim:
        raise DiffusionError(f"windows have {d} features, the model has {norm.transition_dim}")
    terminals = np.asarray(terminals, dtype=bool).reshape(b, h)
    o, a = norm.obs_dim, norm.act_dim
    rewards = windows[:, :h, o + a].copy()  # [B, H]
    if cfg.penalty_in_reward_channel:
        rewards -= np.float32(resolve_window(cfg, norm.env_id).terminal_penalty) * terminals
    timeouts = np.zeros((b, h), dtype=bool)
    timeouts[:, -1] = ~terminals[:, -1]
    return Transitions(
        observations=windows[:, :h, :o].reshape(b * h, o),
        actions=windows[:, :h, o : o + a].reshape(b * h, a),
        rewards=rewards.reshape(-1),
        next_observations=windows[:, 1:, :o].reshape(b * h, o),
        terminals=terminals.reshape(-1),
        timeouts=timeouts.reshape(-1),
    )
