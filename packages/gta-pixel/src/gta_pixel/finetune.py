"""Stage 4 of GTA's pixel protocol (appendix C.4): fine-tune the policy and Q heads on latent stores.

The encoder and both trunks stay frozen: they define the latent space the data (original latents from
:mod:`gta_pixel.encode`, GTA's or SynthER's generated latents) lives in. Trained are the actor's policy MLP and
the critic's twin Q heads with their Polyak target, by the DrQ+BC update of :mod:`gta_pixel.drqbc` written on
latents: y = R_n + gamma^k d min_j Q'_j(z_c', a'), a' = tanh(pi(z_a')) + clip(std eps, +-0.3) clamped, the actor
minimising -lambda min_j Q_j(z_c, a) + MSE(a, a_data) with a the noisy sample, lambda = 2.5 / mean|Q|. The
std schedule continues from the pretraining run's update count.

Design choices the sources leave open (SynthER's and GTA's pixel code was never released):
- the target critic acts on the frozen online critic latent (z_c' of the store): a separate target-trunk
  latent would need 50 more stored numbers per observation;
- n-step returns (``nstep``, 3 as pretraining) run inside each episode or generated segment and are truncated
  at its end (k = min(n, rows left) steps, bootstrapped with gamma^k from the last row's next observation), so
  every row is sampled, including transition-level stores (SynthER: k = 1);
- the union of the stores is sampled uniformly (GTA's stage C).

The latents come from ``encode`` in the run's recorded arithmetic, which ``evaluate`` uses too (see
:mod:`gta_pixel.runs`); a store encoded in another arithmetic is refused.

The heads' Adam moments and step counts continue from the base run's checkpoint by default (``fresh_optimizer``
starts them at zero). GTA C.4 fine-tunes the policy and Q networks of the pretrained DrQ+BC agent, a
continuation of its training, and DrQ+BC's agent carries the Adam state of its actor and critic. Fresh moments
would make the first updates move every head weight by about the learning rate whatever its gradient (Adam's
first step is lr sign(g); the second-moment average needs ~1/(1 - beta2) = 1000 updates to settle): a
perturbation of converged heads unrelated to the latents being compared. A pretraining checkpoint holds the
heads' moments inside its actor and critic optimizers (with the trunks'); a finetune run's are the heads' own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gta_data import StoreError, TrajectoryStore
from gta_data.accel.devices import resolve_device
from gta_pixel import runs
from gta_pixel.drqbc import sample_action
from gta_pixel.drqbc_fast import DrQBCStack, q_twin, run_head
from gta_pixel.errors import RunError
from gta_rl.base import Agent
from gta_rl.buffer import open_stores
from gta_rl.checkpoint import load_checkpoint, save_checkpoint
from gta_rl.fast import MetricAccumulator, StepRunner
from gta_rl.nets import soft_update_
from gta_rl.optim import Adam

FROZEN_PREFIXES = ("encoder.", "actor.trunk.", "critic.trunk.", "critic_target.trunk.")
HEAD_PREFIXES = ("actor.policy.", "critic.Q1.", "critic.Q2.", "critic_target.Q1.", "critic_target.Q2.")

# The pretraining optimizer whose parameters include each head optimizer's (DrQBCStack.optimizers).
PRETRAIN_OPTIMIZER = {"policy": "actor", "q": "critic"}

# Fine-tuning's own random streams: its step counter starts at 0 again, so pretraining's stream ids would
# replay pretraining's draws step for step (the same noise at fine-tune step j as at pretrain step j).
ROW_STREAM, TARGET_NOISE_STREAM, ACTOR_NOISE_STREAM = 1001, 1100, 1101


def nstep_rows(episode_ends: np.ndarray, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, n] rows t .. t+k-1 padded with -1 after k, [N] k) with k = min(n, rows left in the episode)."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    lengths = np.diff(np.concatenate([[0], ends]))
    end_of_row = np.repeat(ends, lengths)  # [N]
    t = np.arange(int(ends[-1]), dtype=np.int64)
    k = np.minimum(nstep, end_of_row - t)
    rows = t[:, None] + np.arange(nstep)
    return np.where(np.arange(nstep) < k[:, None], rows, -1), k


def open_latent_stores(paths: Sequence[Path]) -> list[TrajectoryStore]:
    """The ``--data`` stores, opened once and checked to describe one task (a clear RunError otherwise)."""
    try:
        return open_stores([str(p) for p in paths])
    except StoreError as exc:
        raise RunError(str(exc)) from None


def encoder_seeds(stores: Sequence[TrajectoryStore]) -> dict[str, int]:
    """The seed whose encoder and trunks wrote each latent store that ``gta-pixel encode`` made (path -> seed);
    stores from elsewhere (generated latents) name none."""
    return {str(s.path): int(s.provenance["seed"]) for s in stores
            if s.provenance.get("source") == "gta-pixel encode" and "seed" in s.provenance}


def fine_tuned_seeds(stores: Sequence[TrajectoryStore], seeds: Sequence[int] | None) -> list[int] | None:
    """The seeds whose heads train on ``stores``: a latent store is one seed's features, so the stores that
    ``encode`` wrote decide (``seeds`` None: their seed); other seeds, or stores of two encoders, are refused."""
    seeded = encoder_seeds(stores)
    encoders = sorted(set(seeded.values()))
    if len(encoders) > 1:
        raise RunError(f"the latent stores come from the encoders of seeds {encoders} ({', '.join(seeded)}): "
                       "fine-tune each seed's heads on its own latents, one run per seed")
    if not encoders:
        return None if seeds is None else list(seeds)
    if seeds is None:
        return encoders
    if sorted(int(s) for s in seeds) != encoders:
        path = next(iter(seeded))
        raise RunError(f"{path} holds the latents of seed {encoders[0]}'s encoder and trunks; the heads of seeds "
                       f"{list(seeds)} act on other features (fine-tune --seeds {encoders[0]})")
    return list(seeds)


def encoded_arithmetic(provenance: dict) -> bool | None:
    """Whether a latent store written by ``gta-pixel encode`` was encoded in bf16 (stores from before it was
    recorded were fp32); None for stores from elsewhere (generated latents say nothing about it)."""
    if provenance.get("source") != "gta-pixel encode":
        return None
    arithmetic = provenance.get("arithmetic")
    return bool(arithmetic.get("bf16", False)) if isinstance(arithmetic, dict) else False


class LatentReplay:
    """The union of latent stores on one device, with per-row truncated n-step targets. The stores are taken as
    given: :func:`open_latent_stores` checks that they describe one task, and `finetune` which encoder wrote them."""

    def __init__(self, stores: Sequence[TrajectoryStore], *, nstep: int, discount: float,
                 device: torch.device) -> None:
        self.stores = list(stores)
        obs, act, rew, nxt, disc = [], [], [], [], []
        for store in self.stores:
            data = store.load(names=())
            rows, k = nstep_rows(store.episode_ends, nstep)
            powers = np.where(rows >= 0, discount ** np.arange(nstep, dtype=np.float64), 0.0)
            rew.append((data.rewards.astype(np.float64)[np.maximum(rows, 0)] * powers).sum(1))
            last = rows[np.arange(len(k)), k - 1]
            nxt.append(data.next_observations[last])
            disc.append(discount ** k * (1.0 - data.terminals[last]))
            obs.append(data.observations)
            act.append(data.actions)

        def put(parts: list[np.ndarray]) -> Tensor:
            return torch.as_tensor(np.concatenate(parts).astype(np.float32), device=device)

        self.observations, self.actions, self.rewards = put(obs), put(act), put(rew)  # [N, D], [N, A], [N]
        self.next_observations, self.discounts = put(nxt), put(disc)  # [N, D], [N]

    @property
    def num_rows(self) -> int:
        return int(self.rewards.shape[0])


class HeadTuner(Agent):
    """Trains the heads of every seed of a pretrained :class:`DrQBCStack` on latents; nothing else moves."""

    name = "drqbc-heads"

    def __init__(self, drqbc: DrQBCStack) -> None:
        super().__init__(drqbc.seed_list, 1.0, drqbc.step.device)
        self.drqbc = drqbc
        self.config = drqbc.config
        self.base_updates = int(drqbc.step)  # the std schedule continues from here
        self.dim = self.config.feature_dim
        self.to(drqbc.step.device)
        critic = drqbc.critic
        self.optimizers = {
            "policy": Adam(list(drqbc.actor.policy.parameters()), self.config.lr),
            "q": Adam(list(critic.Q1.parameters()) + list(critic.Q2.parameters()), self.config.lr),
        }

    def train_step(self, data: LatentReplay, batch_size: int, *, actor_step: bool = True) -> dict[str, Tensor]:
        cfg, net, rng = self.config, self.drqbc, self.rng()
        rows = rng.randint(ROW_STREAM, data.num_rows, (batch_size,))  # [S, B]
        z, z_next = data.observations[rows], data.next_observations[rows]  # [S, B, 2 dim]
        actions, rewards, discounts = data.actions[rows], data.rewards[rows], data.discounts[rows]
        std = cfg.stddev_tensor(self.step + self.base_updates)
        eps_target = rng.normal(TARGET_NOISE_STREAM, (batch_size, net.act_dim))
        eps_actor = rng.normal(ACTOR_NOISE_STREAM, (batch_size, net.act_dim))
        with torch.no_grad():
            next_action = sample_action(net.actor_mean(z_next[..., :self.dim]), std, eps_target, cfg.std_clip)
            y = rewards + discounts * q_twin(net.critic_target, z_next[..., self.dim:], next_action).amin(1)
        q = q_twin(net.critic, z[..., self.dim:], actions)  # [S, 2, B]
        critic_loss = (q - y[:, None]).square().mean(-1).sum(1)  # [S]
        opt_q = self.optimizers["q"]
        opt_q.step(torch.autograd.grad(critic_loss.sum(), opt_q.params))

        action = sample_action(torch.tanh(run_head(net.actor.policy, z[..., :self.dim])), std, eps_actor,
                               cfg.std_clip)
        q_pi = q_twin(net.critic, z[..., self.dim:], action, frozen=True).amin(1)  # [S, B]
        lam = cfg.bc_weight / q_pi.detach().abs().mean(-1)
        bc = (action - actions).square().mean((1, 2))
        actor_loss = -q_pi.mean(-1) * lam + bc
        opt_pi = self.optimizers["policy"]
        opt_pi.step(torch.autograd.grad(actor_loss.sum(), opt_pi.params))
        soft_update_(net.critic_target.Q1, net.critic.Q1, cfg.tau)
        soft_update_(net.critic_target.Q2, net.critic.Q2, cfg.tau)
        self.step.add_(1)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "bc_mse": bc.detach(),
                "q_mean": q.detach()[:, 0].mean(-1), "lambda": lam}

    def continue_moments(self, state: dict[str, Tensor]) -> None:
        """Set the heads' Adam moments and step counts to the base run's (its checkpoint tensors ``state``, for
        the same seeds): a finetune run's heads' own (``optim.policy.*``, ``optim.q.*``), else the heads'
        entries of a pretraining run's actor and critic optimizers (``optim.actor.*``, ``optim.critic.*``),
        matched by parameter."""
        for name, opt in self.optimizers.items():
            own = f"optim.{name}."
            if f"{own}t" in state:
                opt.load_state_dict({k[len(own):]: v for k, v in state.items() if k.startswith(own)})
                continue
            source = PRETRAIN_OPTIMIZER[name]
            prefix = f"optim.{source}."
            if f"{prefix}t" not in state:
                raise RunError(f"the base checkpoint holds no optimizer state for the {name} head "
                               "(pass --fresh-optimizer to start it at zero)")
            where = {id(p): i for i, p in enumerate(self.drqbc.optimizers[source].params)}
            picked = {"t": state[f"{prefix}t"]}
            for j, param in enumerate(opt.params):
                i = where[id(param)]
                picked[f"m.{j}"], picked[f"v.{j}"] = state[f"{prefix}m.{i}"], state[f"{prefix}v.{i}"]
            opt.load_state_dict(picked)

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        """The networks as a pretraining checkpoint has them (``model.*``), the heads' Adam moments
        (``optim.<name>.*``) and this stage's step (``finetune.step``)."""
        out = {f"model.{k}": v for k, v in self.drqbc.state_dict().items()}
        for name, opt in self.optimizers.items():
            out.update({f"optim.{name}.{k}": v for k, v in opt.state_dict().items()})
        out["finetune.step"] = self.step
        return out

    def load_checkpoint_tensors(self, state: dict[str, Tensor]) -> None:
        self.drqbc.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        for name, opt in self.optimizers.items():
            prefix = f"optim.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.step.copy_(state["finetune.step"])


def finetune(
    run: Path,
    data: Sequence[Path],
    out: Path,
    *,
    steps: int = 300_000,
    batch_size: int | None = None,
    nstep: int | None = None,
    device: str = "auto",
    compile: bool = False,
    cuda_graph: bool = False,
    log_every: int = 1000,
    checkpoint_every: int = 10_000,
    resume: bool = False,
    fresh_optimizer: bool = False,
    seeds: Sequence[int] | None = None,
    stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, dict[str, list[float]] | None], None] | None = None,
) -> HeadTuner:
    """Fine-tune the heads of every seed of ``run`` (or of those in ``seeds``) on the union of the latent stores
    ``data`` for ``steps`` updates; write the run directory ``out`` (whole networks, so ``encode`` and
    ``evaluate`` read it alone). The heads' Adam state continues from ``run``'s checkpoint, or starts at zero
    with ``fresh_optimizer``. A latent store comes from one seed's encoder and trunks (``encode --seed``): the
    seed that wrote the ``encode`` stores in ``data`` is the one fine-tuned (``seeds`` may only name it); every
    seed of ``run`` trains only on stores that name no encoder. ``stop()``, asked after every update, ends the run
    with a checkpoint of that step (a resume continues it)."""
    out = Path(out)
    if min(steps, log_every, checkpoint_every) < 1:
        raise RunError("steps, log and checkpoint intervals must be positive")
    if not data:
        raise RunError("no latent store given (pass --data at least once)")
    runs.check_out(out, resume)
    dev = resolve_device(device, RunError)
    if resume:  # a resumed run keeps the seeds it was started with
        seeds = [int(s) for s in runs.read_config(out)["seeds"]]
    stores = open_latent_stores(data)
    seeds = fine_tuned_seeds(stores, seeds)
    agent, base_config, base_state = runs.load_agent(run, dev, seeds=seeds)
    if seeds is not None:  # the chosen seeds' rows of the base run's optimizer moments (leading seed axis)
        rows = torch.tensor([[int(s) for s in base_config["seeds"]].index(s) for s in agent.seed_list])
        base_state = {k: v[rows] if k.startswith("optim.") and not k.endswith(".t") else v
                      for k, v in base_state.items()}
    cfg = agent.config
    nstep = cfg.nstep if nstep is None else int(nstep)
    batch_size = cfg.batch_size if batch_size is None else int(batch_size)
    if nstep < 1 or batch_size < 1:
        raise RunError("nstep and batch size must be positive")
    try:
        replay = LatentReplay(stores, nstep=nstep, discount=cfg.discount, device=dev)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    store = replay.stores[0]
    if store.obs_dim != 2 * cfg.feature_dim or store.act_dim != agent.act_dim:
        raise RunError(f"{store.path} has obs/act dims {store.obs_dim}/{store.act_dim}; the heads of {run} take "
                       f"latents of {2 * cfg.feature_dim} and actions of {agent.act_dim}")
    for latent in replay.stores:
        encoded_bf16 = encoded_arithmetic(latent.provenance)
        if encoded_bf16 is not None and encoded_bf16 != agent.bf16:
            raise RunError(f"{latent.path} was encoded {'with' if encoded_bf16 else 'without'} bf16 but {run} "
                           f"computes {'in bf16' if agent.bf16 else 'in fp32'} (evaluation would feed the heads "
                           "other latents): encode it from the run")
    tuner = HeadTuner(agent)
    if resume:
        state, _ = load_checkpoint(out / runs.CHECKPOINT, dev)
        tuner.load_checkpoint_tensors(state)
        runs.drop_metrics_after(out, int(tuner.step))
    else:
        if not fresh_optimizer:
            tuner.continue_moments(base_state)
        out.mkdir(parents=True, exist_ok=True)
        sha = runs.file_sha256(Path(run) / runs.CHECKPOINT)
        runs.write_config(out, {**base_config, "stage": "finetune", "seeds": agent.seed_list, "steps": steps, "batch_size": batch_size,
                                "nstep": nstep, "data": [str(Path(p).resolve()) for p in data],
                                "optimizer": "fresh" if fresh_optimizer else "continued",
                                "base": {"run": str(Path(run).resolve()), "checkpoint_sha256": sha,
                                         "stage": base_config["stage"], "updates": tuner.base_updates}})
    runner = StepRunner(tuner, replay, batch_size, compile=compile, cuda_graph=cuda_graph)
    acc = MetricAccumulator()
    for step in range(int(tuner.step), steps):
        acc.add(runner(step))
        done = step + 1
        logged = None
        if done % log_every == 0 or done == steps:
            logged = acc.pop()
            runs.append_metrics(out, done, agent.seed_list, logged)
        stopping = stop is not None and stop()
        if done % checkpoint_every == 0 or done == steps or stopping:
            save_checkpoint(out / runs.CHECKPOINT, tuner.checkpoint_tensors(), {"stage": "finetune", "step": done})
        if on_progress is not None:
            on_progress(done, logged)
        if stopping:
            break
    return tuner
