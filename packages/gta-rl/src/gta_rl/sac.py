"""Online Soft Actor-Critic for the behaviour policies of D4RL-style datasets (docs/datasets.md).

D4RL's locomotion data come from SAC agents (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and
Applications"): "medium" is the actor early-stopped at about 1/3 of the expert's return, "medium-replay"
the replay buffer up to that point, "expert" the trained actor. This module trains such an agent in a
gymnasium vector env and keeps what those datasets need:

- the actor at every checkpoint with its evaluation return (``actors/step_<k>.safetensors``,
  ``checkpoints.jsonl``), converted by :func:`export_policy_file` to gta-data's numpy policy file;
- every transition in insertion order (the buffer never overwrites: capacity = total steps), so the first
  K rows are exactly what the agent had seen at step K (:func:`export_replay` writes them as a store);
- the simulator state (qpos, qvel) at the start of every episode, so that :func:`export_replay_file` can
  keep those K rows as actions + initial states (a few MB, gta-data's replay file) from which gta-data
  re-simulates them exactly.

Losses (Haarnoja et al. 2018, eqs. 5, 7, 18; twin critics with the min, target networks by Polyak
averaging, automatic temperature with target entropy -|A|):

    y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a' | s')),  a' ~ pi(. | s')
    L_Q = sum_j mean (Q_j(s, a) - y)^2
    L_pi = mean (alpha log pi(a~ | s) - min_j Q_j(s, a~)),  a~ = tanh(mu + sigma eps) (reparameterised)
    L_alpha = -mean log(alpha) (log pi(a~ | s) + target_entropy)

The actor is the tanh-Gaussian of ``gta_data.policies`` (bounded log std as CleanRL's ``sac_continuous``).
Defaults are the paper's (appendix D: 256-256, Adam 3e-4, batch 256, tau 0.005, gamma 0.99, one update
per environment step) with CleanRL's 5000 uniform-random warm-up steps. All random draws (warm-up
actions, exploration noise, batch indices, reparameterisation noise) come from counter-based streams
(``gta_rl.rng``), and update metrics are summed on the device and read only every ``log_every`` steps,
so the update loop never waits for the GPU; only the actions of each environment step go to the host.

Resume restores networks, optimizers, temperature, buffer and counters exactly. The simulators' states
cannot be saved, so the episodes in progress at the checkpoint are cut (their last stored transition is
marked as a timeout) and every env copy starts a new episode from a seed derived from the step.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gta_rl.base import freeze, resolve_device, step_jointly
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json
from gta_rl.nets import StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam
from gta_rl.rng import SeedStreams

STATE = "state.safetensors"
CONFIG = "config.json"
# Stream ids of the counter-based random draws (gta_rl.rng): one per call site.
_S_BATCH, _S_TARGET, _S_ACTOR, _S_EXPLORE, _S_WARMUP = 1, 2, 3, 4, 5
_BUFFER_KEYS = ("obs", "act", "rew", "next_obs", "term", "trunc", "env")


class SACError(ValueError):
    """A SAC run that cannot start, resume or export (one-line message)."""


@dataclass(frozen=True)
class SACConfig:
    env_id: str
    total_steps: int = 1_000_000  # environment transitions (D4RL's SAC: 1M for every locomotion env)
    num_envs: int = 1  # copies of the env stepped together (gymnasium vector env)
    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)  # actor and critic widths (Haarnoja 2018, table 1)
    batch_size: int = 256  # Haarnoja 2018
    actor_lr: float = 3e-4  # Haarnoja 2018: 3e-4 for every network
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    learning_starts: int = 5000  # uniform random actions and no updates before this many steps (CleanRL)
    updates_per_step: float = 1.0  # gradient updates per environment transition (Haarnoja: 1)
    init_alpha: float = 1.0  # initial temperature (CleanRL/SB3 start at 1)
    target_entropy: float | None = None  # None: -|A| (Haarnoja 2018)
    log_std_min: float = -5.0  # bounds of the actor's log std (CleanRL)
    log_std_max: float = 2.0
    checkpoint_every: int = 10_000  # steps between actor checkpoints (each evaluated)
    state_every: int = 0  # steps between saves of the full resumable state (0: at every checkpoint)
    eval_episodes: int = 5  # deterministic evaluation episodes per checkpoint
    eval_seed: int = 1_000_000  # env seed of evaluation episode 0 (disjoint from training seeds)
    eval_async: bool = False  # evaluation envs in worker processes
    env_async: bool = False  # training envs in worker processes (worth it for num_envs >= 4 on CPU)
    log_every: int = 1000  # steps between metrics records
    device: str = "auto"
    compile: bool = False  # torch.compile the update (sampling + losses + Adam + Polyak)
    cuda_graph: bool = False  # capture the update in a CUDA graph and replay it (CUDA only)

    def check(self) -> None:
        if self.total_steps < 1 or self.num_envs < 1 or self.batch_size < 1:
            raise SACError("total_steps, num_envs and batch_size must be positive")
        if self.checkpoint_every < 1 or self.log_every < 1 or self.eval_episodes < 1 or self.state_every < 0:
            raise SACError("checkpoint_every, log_every and eval_episodes must be positive (state_every >= 0)")
        if self.updates_per_step <= 0 or self.learning_starts < 0:
            raise SACError("updates_per_step must be positive and learning_starts >= 0")
        if self.cuda_graph and resolve_device(self.device, SACError).type != "cuda":
            raise SACError("cuda_graph needs a CUDA device")
        if not 0 <= self.seed < 2**31:
            raise SACError(f"seed must be in [0, 2^31), got {self.seed}")
        rates = {"actor_lr": self.actor_lr, "critic_lr": self.critic_lr, "alpha_lr": self.alpha_lr,
                 "init_alpha": self.init_alpha}
        bad = [k for k, v in rates.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            raise SACError(f"{', '.join(bad)} must be positive numbers")
        if not (0 < self.gamma <= 1 and 0 < self.tau <= 1):
            raise SACError(f"gamma and tau must lie in (0, 1], got {self.gamma} and {self.tau}")


class SACAgent(nn.Module):
    """Tanh-Gaussian actor, twin critics with targets, learned temperature (one seed)."""

    def __init__(self, cfg: SACConfig, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        seeds = [cfg.seed]
        # StackedMLP with one member (actor) and two members (the twin critics in one batched matmul).
        self.actor = StackedMLP(mlp_generators(seeds, "sac.actor"), [obs_dim, *cfg.hidden, 2 * act_dim])
        self.critic = StackedMLP(mlp_generators(seeds, "sac.q", 2), [obs_dim + act_dim, *cfg.hidden, 1])
        self.critic_target = freeze(copy.deepcopy(self.critic))
        self.log_alpha = nn.Parameter(torch.full((), math.log(cfg.init_alpha)))
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("update_step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("env_step", torch.zeros((), dtype=torch.int64))
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.to(device)
        self.optimizers = {
            "actor": Adam(list(self.actor.parameters()), cfg.actor_lr),
            "critic": Adam(list(self.critic.parameters()), cfg.critic_lr),
            "alpha": Adam([self.log_alpha], cfg.alpha_lr),
        }

    # -- policy ---------------------------------------------------------------------------------------

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-tanh Gaussian (mean, log_std), each [B, act], for obs [B, obs]."""
        out = self.actor(obs[None])[0]  # [B, 2 act]
        mean, raw = out[:, : self.act_dim], out[:, self.act_dim:]
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)

    def sample(self, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised action in env units and its log-probability, for standard normal noise [B, act]."""
        mean, log_std = self.distribution(obs)
        u = mean + log_std.exp() * noise
        # log N(u; mean, std) - sum log |d a / d u|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
        # (stable for large |u|) and the constant log(scale) of the rescaling to the env's bounds.
        log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u)) + self.scale.log()).sum(-1)
        return torch.tanh(u) * self.scale + self.bias, log_prob

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic action tanh(mean) in env units (evaluation)."""
        mean, _ = self.distribution(obs)
        return torch.tanh(mean) * self.scale + self.bias

    # -- learning -------------------------------------------------------------------------------------

    def streams(self, counter: Tensor) -> SeedStreams:
        return SeedStreams(self.seeds, counter)

    def update(self, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, term: Tensor) -> Tensor:
        """One gradient step of critics, actor and temperature; returns [critic loss, actor loss, alpha,
        entropy] before the step, on the device."""
        cfg = self.cfg
        rng = self.streams(self.update_step)
        b = obs.shape[0]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = self.sample(next_obs, rng.normal(_S_TARGET, (b, self.act_dim))[0])
            q_next = self.critic_target(torch.cat([next_obs, next_a], -1)[None], shared=2)  # [2, B, 1]
            y = rew + cfg.gamma * (1.0 - term) * (q_next.min(0).values[:, 0] - alpha * next_logp)  # [B]
        q = self.critic(torch.cat([obs, act], -1)[None], shared=2)[:, :, 0]  # [2, B]
        critic_loss = (q - y).square().mean(1).sum()
        pi_a, logp = self.sample(obs, rng.normal(_S_ACTOR, (b, self.act_dim))[0])
        # Frozen critic: the actor's gradient must not reach the critic (step_jointly's contract).
        q_pi = self.critic(torch.cat([obs, pi_a], -1)[None], shared=2, frozen=True)[:, :, 0].min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        step_jointly([(critic_loss, self.optimizers["critic"]), (actor_loss, self.optimizers["actor"]),
                      (alpha_loss, self.optimizers["alpha"])])
        soft_update_(self.critic_target, self.critic, cfg.tau)
        self.update_step.add_(1)
        return torch.stack([critic_loss.detach(), actor_loss.detach(), alpha, -logp.detach().mean()])

    def full_state_dict(self) -> dict[str, Tensor]:
        out = {f"model.{k}": v for k, v in self.state_dict().items()}
        for name, opt in self.optimizers.items():
            out.update({f"optim.{name}.{k}": v for k, v in opt.state_dict().items()})
        return out

    def load_full_state_dict(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        for name, opt in self.optimizers.items():
            prefix = f"optim.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def actor_tensors(self) -> dict[str, Tensor]:
        """Actor layers as (w [in, out], b [out]) tensors, the layout of gta-data policy files."""
        out = {}
        for i, layer in enumerate(self.actor.layers):
            out[f"w{i}"] = layer.weight[0]
            out[f"b{i}"] = layer.bias[0, 0]
        return out


class ReplayBuffer:
    """Every transition in insertion order, on the device; ``env`` is the vector-env copy it came from."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.size = capacity, 0
        # The size again, on the device: sampling reads it there, so a captured update needs no new constant.
        self.size_t = torch.zeros((), dtype=torch.int64, device=device)
        f32 = {"dtype": torch.float32, "device": device}
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, **f32), "act": torch.zeros(capacity, act_dim, **f32),
            "rew": torch.zeros(capacity, **f32), "next_obs": torch.zeros(capacity, obs_dim, **f32),
            "term": torch.zeros(capacity, **f32),
            "trunc": torch.zeros(capacity, dtype=torch.bool, device=device),
            "env": torch.zeros(capacity, dtype=torch.int32, device=device),
        }

    def add(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows["rew"])
        if self.size + n > self.capacity:
            raise SACError(f"replay buffer full ({self.capacity} transitions)")
        for key, value in rows.items():
            dst = self.data[key]
            dst[self.size:self.size + n] = torch.from_numpy(np.asarray(value)).to(dst.device, dst.dtype,
                                                                                    non_blocking=True)
        self.size += n
        self.size_t.fill_(self.size)

    def sample(self, rng: SeedStreams, batch_size: int) -> dict[str, Tensor]:
        # Uniform over the rows so far: SeedStreams.randint's multiply-shift with the size as a tensor.
        idx = (rng.bits(_S_BATCH, (batch_size,))[0] * self.size_t) >> 32
        return {k: self.data[k][idx] for k in ("obs", "act", "rew", "next_obs", "term")}

    def state(self) -> dict[str, Tensor]:
        return {f"buffer.{k}": v[: self.size] for k, v in self.data.items()}

    def load(self, state: dict[str, Tensor]) -> None:
        self.size = int(state["buffer.rew"].shape[0])
        self.size_t.fill_(self.size)
        for k, v in self.data.items():
            v[: self.size] = state[f"buffer.{k}"].to(v.device)


class UpdateRunner:
    """One SAC update (batch sampling included) eagerly, through torch.compile, or as the replay of a CUDA
    graph captured after a few eager warm-up updates. Every draw comes from counter-based streams keyed by
    the device step counter and the buffer size is read on the device, so a replay is the same update as
    an eager call."""

    def __init__(self, agent: SACAgent, buffer: ReplayBuffer, batch_size: int, *, compile: bool = False,
                 cuda_graph: bool = False, warmup: int = 3) -> None:
        self.agent, self.buffer, self.batch_size = agent, buffer, batch_size
        self.fn = torch.compile(self.step, dynamic=False) if compile else self.step
        self.cuda_graph, self.warmup, self.runs = cuda_graph, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None

    def step(self) -> Tensor:
        batch = self.buffer.sample(self.agent.streams(self.agent.update_step), self.batch_size)
        return self.agent.update(batch["obs"], batch["act"], batch["rew"], batch["next_obs"], batch["term"])

    def __call__(self) -> Tensor:
        if not self.cuda_graph:
            return self.fn()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.runs < self.warmup:
            # Warm up on a side stream (cuBLAS workspaces, compile caches), as torch.cuda.graphs advises.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn()
            torch.cuda.current_stream().wait_stream(side)
            self.runs += 1
            return out
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.fn()
        self.graph.replay()  # capture only records the kernels: run this update now
        return self.out


def _make_envs(cfg: SACConfig, asynchronous: bool):
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    from gta_rl.evaluation import make_env

    probe = make_env(cfg.env_id)  # a clear error for an unknown env before spawning copies
    has_state = hasattr(probe.unwrapped, "state_vector")  # MuJoCo: episode start states can be recorded
    spaces = (probe.observation_space, probe.action_space)
    probe.close()
    if not all(isinstance(space, gym.spaces.Box) for space in spaces):
        raise SACError(f"{cfg.env_id}: SAC here needs vector (Box) observations and actions, not "
                       f"{type(spaces[0]).__name__} / {type(spaces[1]).__name__}")
    vector = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = vector([lambda: make_env(cfg.env_id) for _ in range(cfg.num_envs)], autoreset_mode=AutoresetMode.NEXT_STEP)
    return envs, has_state


def _is_sac_config(path: Path) -> bool:
    """Whether ``path`` is the config.json of a SAC run (its keys are SACConfig fields, env_id among them)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    names = {f.name for f in fields(SACConfig)}
    return isinstance(saved, dict) and "env_id" in saved and "total_steps" in saved and set(saved) <= names


class _Logs:
    def __init__(self, out: Path) -> None:
        self.metrics, self.checkpoints = out / "metrics.jsonl", out / "checkpoints.jsonl"

    def truncate_after(self, step: int) -> None:
        """Resuming from ``step``: drop records written after it (they are written again)."""
        for p in (self.metrics, self.checkpoints):
            if p.exists():
                keep = [line for line in p.read_text().splitlines() if line and json.loads(line)["step"] <= step]
                p.write_text("".join(line + "\n" for line in keep))

    @staticmethod
    def write(path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []


def read_checkpoints(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's actor checkpoints: [{step, eval_return, eval_return_std, path}, ...] by step."""
    path = Path(run_dir) / "checkpoints.jsonl"
    if not path.exists():
        raise SACError(f"{run_dir} is not a SAC run directory (no checkpoints.jsonl)")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _reset_states(envs) -> list[np.ndarray]:
    """The full simulator state (qpos, qvel) of every copy (MuJoCo envs' ``state_vector``)."""
    return [np.asarray(v, dtype=np.float64).copy() for v in envs.call("state_vector")]


def train_sac(cfg: SACConfig, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
              deadline: float | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a SAC run in ``out``; returns {step, checkpoints}. ``stop_after`` ends this call
    after that many more environment steps (tests use it to simulate an interruption); ``deadline`` (a
    ``time.time()`` value) ends it at that wall-clock time, with a checkpoint (evaluated actor and full state)
    where it stopped, so that the run can be resumed or exported from there."""
    from gta_rl.evaluation import Evaluator

    cfg.check()
    out = Path(out)
    device = resolve_device(cfg.device, SACError)
    if resume:
        if not (out / STATE).exists():
            raise SACError(f"nothing to resume in {out} (no {STATE})")
        saved = json.loads((out / CONFIG).read_text())
        saved["hidden"] = tuple(saved["hidden"])
        # How the run executes may change on resume; what it computes may not.
        free = ("device", "compile", "cuda_graph", "env_async", "eval_async", "state_every")
        if {k: v for k, v in saved.items() if k not in free} != {
                k: v for k, v in asdict(cfg).items() if k not in free}:
            raise SACError(f"the config differs from the one of the run in {out}")
    elif out.exists() and any(out.iterdir()):
        if _is_sac_config(out / CONFIG) and not (out / STATE).exists() and not any((out / "actors").glob("*")):
            # An earlier start that saved nothing (stopped before its first checkpoint, or failed): start again.
            for name in (CONFIG, "metrics.jsonl", "checkpoints.jsonl"):
                (out / name).unlink(missing_ok=True)
        else:
            raise SACError(f"{out} is not empty (pass resume to continue a run)")

    envs, record_starts = _make_envs(cfg, cfg.env_async)
    try:
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        act_dim = int(np.prod(envs.single_action_space.shape))
        low = envs.single_action_space.low.astype(np.float32)
        high = envs.single_action_space.high.astype(np.float32)
        agent = SACAgent(cfg, obs_dim, act_dim, low, high, device)
        buffer = ReplayBuffer(cfg.total_steps + cfg.num_envs, obs_dim, act_dim, device)
        logs = _Logs(out)
        last_row = np.full(cfg.num_envs, -1, dtype=np.int64)  # last buffer row of each env copy
        starts = EpisodeStarts()
        if resume:
            state, meta = load_checkpoint(out / STATE, device)
            agent.load_full_state_dict(state)
            buffer.load(state)
            starts.load(state)
            step, owed = int(meta["step"]), float(meta["owed_updates"])
            last_row = np.asarray(meta["last_row"], dtype=np.int64)
            open_rows = last_row[(last_row >= 0) & np.asarray(meta["open"], dtype=bool)]
            # Episodes in progress at the checkpoint end here (the simulator state is lost): a timeout.
            buffer.data["trunc"][torch.as_tensor(open_rows, device=device)] = True
            logs.truncate_after(step)
        else:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / CONFIG, asdict(cfg))
            step, owed = 0, 0.0
        (out / "actors").mkdir(exist_ok=True)
        evaluator = Evaluator(cfg.env_id, 1, cfg.eval_episodes, seed_base=cfg.eval_seed,
                              asynchronous=cfg.eval_async)
        # Every (re)start resets all copies with seeds derived from the step, so a resumed run does not
        # replay the episodes it began with.
        obs, _ = envs.reset(seed=[cfg.seed * 1_000_003 + step * cfg.num_envs + i for i in range(cfg.num_envs)])
        obs = np.asarray(obs, dtype=np.float32).reshape(cfg.num_envs, -1)
        # The state each copy's next episode starts from (recorded with its first transition).
        pending: list[np.ndarray | None] = _reset_states(envs) if record_starts else []
        done = np.zeros(cfg.num_envs, dtype=bool)
        ep_return = np.zeros(cfg.num_envs)
        finished: list[float] = []
        metric_sum = torch.zeros(4, device=device)
        act_step = torch.zeros((), dtype=torch.int64, device=device)
        runner = UpdateRunner(agent, buffer, cfg.batch_size, compile=cfg.compile, cuda_graph=cfg.cuda_graph)
        metric_n = 0
        end = cfg.total_steps if stop_after is None else min(cfg.total_steps, step + stop_after)
        next_log = (step // cfg.log_every + 1) * cfg.log_every
        next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        t0, start = time.time(), step
        saved_at = step
        while step < end and (deadline is None or time.time() < deadline):
            act_step.fill_(step)  # a kernel argument, not a host-to-device copy
            if step < cfg.learning_starts:
                u = agent.streams(act_step).uniform(_S_WARMUP, (cfg.num_envs, act_dim))[0]
                action_t = agent.bias + agent.scale * (2.0 * u - 1.0)
            else:
                with torch.no_grad():
                    noise = agent.streams(act_step).normal(_S_EXPLORE, (cfg.num_envs, act_dim))[0]
                    action_t, _ = agent.sample(torch.from_numpy(obs).to(device), noise)
            action = action_t.cpu().numpy()
            next_obs, reward, terminated, truncated, _ = envs.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32).reshape(cfg.num_envs, -1)
            # NEXT_STEP autoreset: a copy that finished last step was only reset now; not a transition.
            valid = ~done
            n_valid = int(valid.sum())
            if n_valid:
                buffer.add({"obs": obs[valid], "act": action[valid], "rew": reward[valid],
                            "next_obs": next_obs[valid], "term": terminated[valid],
                            "trunc": truncated[valid] & ~terminated[valid],
                            "env": np.flatnonzero(valid).astype(np.int32)})
                last_row[valid] = np.arange(buffer.size - n_valid, buffer.size)
                if record_starts:
                    for i, row in zip(np.flatnonzero(valid), last_row[valid], strict=True):
                        if pending[i] is not None:
                            starts.add(int(row), pending[i])
                            pending[i] = None
            if record_starts and not valid.all():
                # These copies were reset by this step (NEXT_STEP autoreset): their new episode starts here.
                states = _reset_states(envs)
                for i in np.flatnonzero(~valid):
                    pending[i] = states[i]
            ep_return += np.where(valid, reward, 0.0)
            done = np.asarray(terminated) | np.asarray(truncated)
            for i in np.flatnonzero(done & valid):
                finished.append(float(ep_return[i]))
                ep_return[i] = 0.0
            obs = next_obs
            prev, step = step, step + n_valid
            if step > cfg.learning_starts:
                # One update per transition collected after the warm-up (times updates_per_step).
                owed += (step - max(prev, cfg.learning_starts)) * cfg.updates_per_step
                while owed >= 1.0:
                    metric_sum += runner()
                    metric_n += 1
                    owed -= 1.0
            agent.env_step.fill_(step)
            if step >= next_log or step >= end:
                record: dict[str, Any] = {"step": step, "updates": int(agent.update_step),
                                          "steps_per_s": round((step - start) / max(time.time() - t0, 1e-9), 1)}
                if metric_n:
                    # The one host read of the update metrics per log period.
                    values = (metric_sum / metric_n).tolist()
                    record.update(zip(("critic_loss", "actor_loss", "alpha", "entropy"), values, strict=True))
                    metric_sum.zero_()
                    metric_n = 0
                if finished:
                    record["train_return"] = float(np.mean(finished))
                    finished.clear()
                logs.write(logs.metrics, record)
                next_log = (step // cfg.log_every + 1) * cfg.log_every
            if step >= next_ckpt or step >= cfg.total_steps:
                full = (cfg.state_every == 0 or step >= cfg.total_steps
                        or step // cfg.state_every > saved_at // cfg.state_every)
                _checkpoint(agent, buffer, starts, evaluator, out, logs, step, owed, last_row, ~done, full)
                saved_at = step if full else saved_at
                next_ckpt = (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
            if progress is not None:
                progress(step, cfg.total_steps)
        if step < end and saved_at != step:  # stopped by the deadline: keep what was reached
            _checkpoint(agent, buffer, starts, evaluator, out, logs, step, owed, last_row, ~done, True)
        evaluator.close()
    finally:
        envs.close()
    # (A deadline that passed before the first step leaves a run without checkpoints.)
    checkpoints = read_checkpoints(out) if (out / "checkpoints.jsonl").exists() else []
    return {"step": step, "updates": int(agent.update_step), "checkpoints": checkpoints}


class EpisodeStarts:
    """Buffer row of each episode's first transition and the simulator state (qpos, qvel) it started from."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.states: list[np.ndarray] = []

    def add(self, row: int, state: np.ndarray) -> None:
        self.rows.append(row)
        self.states.append(state)

    def state(self) -> dict[str, Tensor]:
        if not self.rows:
            return {}
        return {"episodes.start_rows": torch.tensor(self.rows, dtype=torch.int64),
                "episodes.start_states": torch.from_numpy(np.stack(self.states))}

    def load(self, state: dict[str, Tensor]) -> None:
        if "episodes.start_rows" in state:
            self.rows = state["episodes.start_rows"].cpu().tolist()
            self.states = list(state["episodes.start_states"].cpu().double().numpy())


def _checkpoint(agent: SACAgent, buffer: ReplayBuffer, starts: EpisodeStarts, evaluator, out: Path, logs: _Logs,
                step: int, owed: float, last_row: np.ndarray, open_: np.ndarray, full: bool) -> None:
    device = agent.scale.device

    def policy(obs: np.ndarray) -> np.ndarray:  # [1, E, obs]
        return agent.act(torch.from_numpy(obs[0]).to(device)).cpu().numpy()[None]

    # A deadline stop right after a scheduled checkpoint: evaluated and listed already, only the state is due.
    if not any(json.loads(line)["step"] == step for line in _lines(logs.checkpoints)):
        returns = evaluator.run(policy)[0]
        info = {"step": step, "eval_return": float(returns.mean()), "eval_return_std": float(returns.std()),
                "updates": int(agent.update_step)}
        name = f"actors/step_{step:09d}.safetensors"
        save_checkpoint(out / name, agent.actor_tensors(), info)
        # Listed before the state is saved: a resume drops records newer than its state, never the reverse.
        logs.write(logs.checkpoints, {**info, "path": name})
    if full:
        save_checkpoint(out / STATE, {**agent.full_state_dict(), **buffer.state(), **starts.state()},
                        {"step": step, "owed_updates": owed, "last_row": last_row.tolist(),
                         "open": open_.tolist()})


# -- exports for gta-data -------------------------------------------------------------------------------


def pick_checkpoints(checkpoints: list[dict[str, Any]], fraction: float = 1.0 / 3.0,
                     medium_return: float | None = None) -> dict[str, dict[str, Any]]:
    """D4RL's choice: "expert" = the best-evaluated checkpoint (the later one on ties); "medium" = the
    checkpoint before it whose return is closest to ``fraction`` of the expert's (the earlier on ties), or
    to ``medium_return`` when given (e.g. the mean return of D4RL's own medium dataset)."""
    if not checkpoints:
        raise SACError("the run has no checkpoints")
    expert = max(reversed(checkpoints), key=lambda c: c["eval_return"])
    target = fraction * expert["eval_return"] if medium_return is None else medium_return
    before = [c for c in checkpoints if c["step"] <= expert["step"]]
    medium = min(before, key=lambda c: abs(c["eval_return"] - target))
    return {"medium": medium, "expert": expert}


def export_policy_file(run_dir: str | Path, path: str | Path, picks: dict[str, dict[str, Any]]):
    """Write gta-data's numpy policy file with the actors of ``picks`` ({name: checkpoint record})."""
    from gta_data.policies import NumpyActor, save_policy_file

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / CONFIG).read_text())
    state, _ = load_checkpoint(run_dir / STATE, keys=("model.scale", "model.bias"))  # not the buffer
    scale, bias = state["model.scale"].numpy(), state["model.bias"].numpy()
    low, high = bias - scale, bias + scale
    actors = {}
    for name, record in picks.items():
        tensors, meta = load_checkpoint(run_dir / record["path"])
        n = len(tensors) // 2
        weights = [(tensors[f"w{i}"].numpy(), tensors[f"b{i}"].numpy()) for i in range(n)]
        info = {k: meta[k] for k in ("step", "eval_return", "eval_return_std")}
        actors[name] = NumpyActor(weights, cfg["log_std_min"], cfg["log_std_max"], low, high, info)
    prov = {"algorithm": "SAC (gta_rl.sac)", "config": cfg}
    return save_policy_file(path, cfg["env_id"], actors, provenance=prov)


def _episode_rows(state: dict[str, Tensor], upto_step: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Buffer columns up to ``upto_step`` and the row indices of each episode, in the order their first
    transition was collected. Rows of one env copy are consecutive episodes split at terminations and
    timeouts."""
    rows = {k: state[f"buffer.{k}"][:upto_step].numpy() for k in _BUFFER_KEYS}
    ends = rows["term"].astype(bool) | rows["trunc"]
    episodes = []
    for env in np.unique(rows["env"]):
        idx = np.flatnonzero(rows["env"] == env)
        cuts = np.flatnonzero(ends[idx]) + 1
        episodes.extend(part for part in np.split(idx, cuts) if len(part))
    episodes.sort(key=lambda part: part[0])
    return rows, episodes


def _load_state_upto(run_dir: str | Path, upto_step: int) -> dict[str, Tensor]:
    state, _ = load_checkpoint(Path(run_dir) / STATE)
    size = int(state["buffer.rew"].shape[0])
    if not 0 < upto_step <= size:
        raise SACError(f"upto_step must be in [1, {size}] (transitions in the buffer), got {upto_step}")
    return state


def replay_episodes(run_dir: str | Path, upto_step: int):
    """The first ``upto_step`` transitions of the run's buffer as episodes (Transitions), in the order
    their first transition was collected; an episode still running at ``upto_step`` ends in a timeout."""
    from gta_data import Transitions

    rows, episodes = _episode_rows(_load_state_upto(run_dir, upto_step), upto_step)
    for part in episodes:
        terminals = rows["term"][part].astype(bool)
        timeouts = rows["trunc"][part].copy()
        timeouts[-1] = not terminals[-1]
        yield Transitions(observations=rows["obs"][part], actions=rows["act"][part], rewards=rows["rew"][part],
                          next_observations=rows["next_obs"][part], terminals=terminals, timeouts=timeouts)


def export_replay_file(run_dir: str | Path, out: str | Path, upto_step: int):
    """Write the first ``upto_step`` transitions of the run (D4RL's medium-replay) as gta-data's replay file:
    each episode's initial simulator state and its actions, from which gta-data re-simulates the
    transitions (``gta_data.replay``), plus each episode's recorded return and last observation to check
    that re-simulation."""
    from gta_data.replay import ReplayFile, save_replay_file

    cfg = json.loads((Path(run_dir) / CONFIG).read_text())
    state = _load_state_upto(run_dir, upto_step)
    if "episodes.start_rows" not in state:
        raise SACError(f"the run in {run_dir} recorded no initial states (not a MuJoCo env?): export_replay "
                       "writes its transitions as a store instead")
    start_of = {int(r): i for i, r in enumerate(state["episodes.start_rows"].tolist())}
    start_states = state["episodes.start_states"].double().numpy()
    rows, episodes = _episode_rows(state, upto_step)
    missing = [int(part[0]) for part in episodes if int(part[0]) not in start_of]
    if missing:
        raise SACError(f"no initial state recorded for the episodes starting at rows {missing[:5]}")
    order = np.concatenate(episodes)
    replay = ReplayFile(
        env_id=cfg["env_id"],
        starts=np.stack([start_states[start_of[int(part[0])]] for part in episodes]),
        lengths=np.asarray([len(part) for part in episodes], dtype=np.int64),
        terminal=np.asarray([bool(rows["term"][part[-1]]) for part in episodes]),
        actions=rows["act"][order],
        returns=np.asarray([rows["rew"][part].astype(np.float64).sum() for part in episodes]),
        last_obs=np.stack([rows["next_obs"][part[-1]] for part in episodes]),
        provenance={"source": "sac replay buffer", "upto_step": upto_step, "sac_config": cfg},
    )
    return save_replay_file(out, replay)


def export_replay(run_dir: str | Path, out: str | Path, upto_step: int, *, overwrite: bool = False):
    """Write the first ``upto_step`` transitions of the run (what the agent had seen when it reached the
    medium checkpoint: D4RL's medium-replay) as a trajectory store with D4RL reference scores."""
    from gta_data import StoreWriter, TrajectoryStore
    from gta_data.scores import D4RL_REFERENCE_SCORES, env_family

    cfg = json.loads((Path(run_dir) / CONFIG).read_text())
    family = env_family(cfg["env_id"])
    lo, hi = D4RL_REFERENCE_SCORES.get(family, (None, None)) if family else (None, None)
    episodes = replay_episodes(run_dir, upto_step)
    first = next(episodes)
    prov = {"source": "sac replay buffer", "upto_step": upto_step, "sac_config": cfg}
    with StoreWriter(out, env_id=cfg["env_id"], obs_dim=first.obs_dim, act_dim=first.act_dim,
                     ref_min_score=lo, ref_max_score=hi, provenance=prov, overwrite=overwrite) as writer:
        writer.add_episode(first)
        for episode in episodes:
            writer.add_episode(episode)
    return TrajectoryStore.open(out)
