"""The arms of one training run as one stacked agent: each arm's resolved run, data, run directory and
logs, and the stacked agent whose member rows they own (``gta-rl train --arm``; a run with ``--data`` is a
stack of one arm). Everything that is per arm lives here -- splitting the stack's checkpoint into the arms'
checkpoints and joining them on resume, writing each arm's metric lines, evaluations and results -- so the
training loop (:mod:`gta_rl.training`) sees one agent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gta_data.metric_sinks import MetricSinks
from gta_rl.algorithms import build_agent
from gta_rl.base import Agent
from gta_rl.buffer import StackedData
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json
from gta_rl.config import ResolvedRun, RunConfig, RunError
from gta_rl.evaluation import check_env_matches
from gta_rl.kernels import fused_mlp
from gta_rl.nets import fused_mlp_networks
from gta_rl.resolve import resolve_run
from gta_rl.run_dir import CHECKPOINT, SeedLogs, clear_unstarted_run, read_config, summarize_history

# Settings a resume may change: they change how fast the run goes, not what it computes.
_FREE_ON_RESUME = ("steps", "device", "compile", "cuda_graph", "tf32", "bf16", "fused_mlp", "fullgraph",
                   "eval_async", "eval_overlap", "arm", "arms", "log_to")
# What every arm of a stack must share: one agent config, one evaluation.
_ARMS_AGREE_ON = ("algorithm_config", "env_id", "env_kwargs", "obs_dim", "act_dim", "max_action", "ref_scores",
                  "observation_layout", "eval_episodes", "eval_seeding")


@dataclass
class _Arm:
    """One arm of a stack: its run directory, resolved run (``config.json``), data and member rows."""

    name: str
    out: Path
    run: ResolvedRun
    data: Any  # OfflineData, or the Decision Transformer's sequence data
    members: slice  # rows of the stacked agent
    restart: bool  # out holds an earlier start that never reached its first checkpoint
    saved: dict[str, Any] | None  # config.json of the run being resumed
    history: dict[str, Any] = field(default_factory=lambda: {"evals": []})
    logs: SeedLogs | None = None


def open_stack(cfg: RunConfig, arms: dict[str, tuple[Sequence[str], Path, bool]], device: torch.device,
               resume: bool) -> Stack:
    """The stack of ``arms`` ({name: (stores, run directory, restart)}), every refusal made -- the arms'
    agreement, the env, a resume's configs and checkpoints -- before anything is written."""
    group: list[_Arm] = []
    for i, (name, (paths, out, restart)) in enumerate(arms.items()):
        saved = read_config(out) if resume else None
        # several arms: each arm's arrays stay on the host, only their concatenation goes to the device
        where = device if len(arms) == 1 else torch.device("cpu")
        run, data = resolve_run(cfg, tuple(str(Path(p)) for p in paths), saved, where)
        if len(arms) > 1:
            run = replace(run, arm=name, arms=tuple(arms))
        rows = slice(i * len(cfg.seeds), (i + 1) * len(cfg.seeds))  # this arm's members in the stack
        group.append(_Arm(name, out, run, data, rows, restart, saved))
    _check_arms_agree(group)
    stack = Stack(group, device)
    if cfg.fused_mlp and not fused_mlp_networks(stack.agent):
        raise RunError(f"--fused-mlp: none of {cfg.algorithm}'s networks has the kernel's shape (two hidden "
                       f"layers of {fused_mlp.HIDDEN}); drop the flag")
    run = stack.run
    if run.config.eval_episodes > 0:  # an env the stores do not fit fails the run up front
        check_env_matches(run.env_id, run.env_kwargs, run.observation_layout, run.obs_dim)
    if resume:
        stack.loaded = _read_checkpoints(group, device)
    return stack


def _check_arms_agree(arms: Sequence[_Arm]) -> None:
    first = arms[0].run.to_json()
    for arm in arms[1:]:
        other = arm.run.to_json()
        for key in _ARMS_AGREE_ON:
            if other.get(key) != first.get(key):
                hint = "pass --preset to give them the same settings, or " if key == "algorithm_config" else ""
                raise RunError(f"arms {arms[0].name!r} and {arm.name!r} differ in {key}: they cannot train as one "
                               f"stack ({hint}train them separately)")


def _read_checkpoints(group: Sequence[_Arm], device: torch.device) -> list[tuple[dict, dict]]:
    """Every arm's checkpoint, after checking each arm's config against its saved one and that the arms
    stopped at the same step: a resume is refused before any run directory is touched."""
    for arm in group:
        now = arm.run.to_json()
        differs = [k for k in now if k not in _FREE_ON_RESUME and arm.saved.get(k) != now[k]]
        if differs:
            raise RunError(f"cannot resume {arm.out}: the config differs in {', '.join(differs)}")
    loaded = [load_checkpoint(arm.out / CHECKPOINT, device) for arm in group]
    steps = {int(meta["step"]) for _, meta in loaded}
    pendings = {meta.get("pending_eval") for _, meta in loaded}
    if len(steps) != 1 or len(pendings) != 1:
        at = ", ".join(f"{arm.name} at {int(meta['step'])}" for arm, (_, meta) in zip(group, loaded, strict=True))
        raise RunError(f"the arms' checkpoints are at different steps ({at}): resume them one by one")
    return loaded


class Stack:
    """The stacked agent of the arms, its data, and each arm's run directory. ``run`` is the stack's own
    view: the arms' shared settings (evaluation, agent, env) with every member's seed, arm after arm."""

    def __init__(self, group: list[_Arm], device: torch.device) -> None:
        self.group, self.device = group, device
        self.run = group[0].run.with_seeds([s for arm in group for s in arm.run.seeds])
        self.data = (group[0].data if len(group) == 1 else
                     StackedData([a.data for a in group], [len(a.run.seeds) for a in group], device=device))
        self.agent = self.new_agent()
        self.members = _MemberState(self.agent, self.run) if len(group) > 1 else None
        self.loaded: list[tuple[dict, dict]] | None = None  # the arms' checkpoints, on resume
        self.pending_at_start: int | None = None

    def new_agent(self) -> Agent:
        """An agent of the stack's config with the data's state statistics (the training agent, or the copy a
        background evaluation acts with)."""
        agent = build_agent(self.run, self.device)
        agent.register_buffer("obs_mean", torch.as_tensor(self.data.obs_mean, device=self.device))
        agent.register_buffer("obs_std", torch.as_tensor(self.data.obs_std, device=self.device))
        return agent

    def start(self, resume: bool) -> int:
        """Write every arm's config.json and open its logs, load the checkpoints on resume; the first step."""
        for arm in self.group:
            _open_run_dir(arm, resume)
        if self.loaded is None:
            return 0
        states = [state for state, _ in self.loaded]
        self.agent.load_full_state_dict(states[0] if self.members is None else
                                        self.members.join(states, self.agent.full_state_dict()))
        meta = self.loaded[0][1]
        start, self.pending_at_start = int(meta["step"]), meta.get("pending_eval")
        for arm, (_, own) in zip(self.group, self.loaded, strict=True):
            arm.history = own["history"]
            # A checkpoint written while its step's evaluation ran in the background: evaluate that step again.
            arm.logs.truncate_after(start, drop_evals_at=self.pending_at_start)
        self.loaded = None
        return start

    def latest_scores(self) -> dict[str, list[float]]:
        """A resumed run's latest evaluation, ``score_mean`` per member (empty before the first)."""
        latest = [arm.history["evals"][-1]["scores"] for arm in self.group if arm.history["evals"]]
        return {"score_mean": [s for scores in latest for s in scores]} if len(latest) == len(self.group) else {}

    def log_train(self, step: int, rate: float, means: dict[str, list[float]]) -> None:
        """One metric line per seed of every arm: the means since the last line, per stacked member."""
        for arm in self.group:
            arm.logs.write({s: {"step": step, "kind": "train", "updates_per_s": rate,
                                **{k: v[arm.members][i] for k, v in means.items()}}
                            for i, s in enumerate(arm.run.seeds)})

    def log_eval(self, step: int, scores: dict[str, Any]) -> None:
        """Record an evaluation of every member in its arm's history and seed logs."""
        for arm in self.group:
            _record_eval(arm, step, _member_rows(scores, arm.members))

    def save(self, step: int, pending: int | None) -> None:
        """Every arm's checkpoint at ``step`` (``pending``: the step whose evaluation is still running)."""
        state = self.agent.full_state_dict()
        for arm in self.group:
            own = state if self.members is None else self.members.split(state, arm.members)
            save_checkpoint(arm.out / CHECKPOINT, own, {"step": step, "history": arm.history, "pending_eval": pending})

    def finish(self, step: int, wall: float) -> dict[str, dict[str, Any]]:
        """Each arm's results document; written as results.json where the run reached its last step."""
        out = {}
        for arm in self.group:
            results = summarize_history(arm.run, arm.history, step)
            results["wall_s_this_call"] = wall
            if step == arm.run.config.steps:
                write_json(arm.out / "results.json", results)
            out[arm.name] = results
        return out

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        for arm in self.group:
            if arm.logs is not None:
                arm.logs.close()


class _MemberState:
    """Splits the stacked agent's state into each arm's checkpoint and joins the arms' checkpoints back.

    A tensor is per member where its shape differs from a one-member agent's: k rows per member on dim 0,
    seed-major (k = 2 for a seed's twin critics). Others (the step, Adam's update count) are shared. The
    state statistics are per member in the stack ([S, 1, obs]) and shared within an arm ([obs], as in a run
    trained alone)."""

    STATS = ("model.obs_mean", "model.obs_std")

    def __init__(self, agent: Agent, run: ResolvedRun) -> None:
        one = build_agent(run.with_seeds(run.seeds[:1]), torch.device("cpu"))
        shapes = {k: v.shape for k, v in one.full_state_dict().items()}
        self.rows = {k: shapes[k][0] for k, v in agent.full_state_dict().items()
                     if k in shapes and k not in self.STATS and v.shape != shapes[k]}  # key -> rows per member

    def split(self, state: dict[str, torch.Tensor], members: slice) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            if key in self.STATS:
                out[key] = value[members.start, 0]
            elif key in self.rows:
                k = self.rows[key]
                out[key] = value[members.start * k:members.stop * k]
            else:
                out[key] = value
        return out

    def join(self, states: Sequence[dict[str, torch.Tensor]], current: dict[str, torch.Tensor]) -> dict:
        out = {}
        for key, value in current.items():
            if key in self.STATS:
                out[key] = value  # computed from the data, as each arm's own
            elif key in self.rows:
                out[key] = torch.cat([s[key] for s in states])
            else:
                out[key] = states[0][key]
        return out


def _open_run_dir(arm: _Arm, resume: bool) -> None:
    """Write config.json and open the seed logs (a resume was checked by :func:`_read_checkpoints`)."""
    if arm.restart:
        clear_unstarted_run(arm.out)
    arm.out.mkdir(parents=True, exist_ok=True)
    if resume:
        # written again when the run reaches its (possibly new) last step; until then it is unfinished
        (arm.out / "results.json").unlink(missing_ok=True)
    config = arm.run.to_json()
    write_json(arm.out / "config.json", config)
    sinks = MetricSinks(arm.out, arm.run.config.log_to, name=f"{arm.out.name}", config=config)
    if arm.restart:
        sinks.rewind(0)  # copies written by the start that never reached a checkpoint
    arm.logs = SeedLogs(arm.out, list(arm.run.seeds), sinks)


def _member_rows(scores: dict[str, Any], rows: slice) -> dict[str, Any]:
    """An evaluation's per-member lists restricted to some members (one arm)."""
    out = {k: v[rows] for k, v in scores.items() if k != "targets"}
    if "targets" in scores:
        out["targets"] = {t: _member_rows(v, rows) for t, v in scores["targets"].items()}
    return out


def _record_eval(arm: _Arm, step: int, scores: dict[str, Any]) -> None:
    entry = {"step": step, "scores": scores["score_mean"]}
    if "targets" in scores:
        entry["targets"] = {t: v["score_mean"] for t, v in scores["targets"].items()}
    arm.history["evals"].append(entry)
    arm.logs.write({s: {"step": step, "kind": "eval", "return_mean": scores["return_mean"][i],
                        "score_mean": scores["score_mean"][i], "scores": scores["scores"][i],
                        **({"targets": {t: {"return_mean": v["return_mean"][i], "score_mean": v["score_mean"][i]}
                                        for t, v in scores["targets"].items()}} if "targets" in scores else {})}
                    for i, s in enumerate(arm.run.seeds)})
