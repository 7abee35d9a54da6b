"""Data quality of an augmented store against its original (GTA section 5.4, appendices D, F.4, F.6, F.7).

``evaluate_quality`` samples transitions of the augmented store uniformly (the paper samples 1M of
5M), steps the true environment from them (``oracle.run_oracle``) and computes dynamic MSE, oracle
reward and novelty against the FULL original data. The headline oracle metrics average over the sampled
rows whose state is exactly known: Hopper and Walker2d clip velocities to +-10 in the observation, and a
row with a velocity at that bound can only be stepped from the clipped velocity, which puts a floor under
the dynamic MSE that says nothing about the generator (a random-policy Walker2d store judged against
itself: 4e-2 with those rows, 4e-14 without). ``with_clipped_states`` repeats them over every row with a
usable outcome, clipped ones stepped from the clipped velocity as the authors' code does. Each version
takes the original data's reward over the same kind of rows as its baseline (never one side filtered and
the other not: the clipped rows are the fast ones, with higher rewards). Envs without clipped
observations have the same numbers in both. Novelty needs no simulator and uses every sampled row. It
also computes the reward-sum distributions of F.7 on whole generated segments and, when the augmented
store carries ``meta/condition``, the F.6 correlation between condition and generated return.

The augmented store's provenance names its source (``source_store``): a pair given the other way round
(the "original" made from the "augmented") is refused, and a source other than the original is a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gta_eval import metrics as M
from gta_eval.errors import EvalError
from gta_eval.oracle import OracleSpec, clipped_states, run_oracle

if TYPE_CHECKING:
    from gta_data import TrajectoryStore

Progress = Callable[[str, int, int], None]  # (stage, advance, total)


@dataclass
class QualityResult:
    metrics: dict[str, Any]
    reward_sums: dict[str, np.ndarray] = field(default_factory=dict)  # F.7 series
    condition: np.ndarray | None = None  # F.6 (condition, generated return)
    generated_return: np.ndarray | None = None


def _open_pair(original: str, augmented: str):
    from gta_data import StoreError, TrajectoryStore

    try:
        orig, aug = TrajectoryStore.open(original), TrajectoryStore.open(augmented)
    except StoreError as exc:
        raise EvalError(str(exc)) from None
    if orig.env_id != aug.env_id:
        raise EvalError(f"stores are of different envs: original {orig.env_id!r}, augmented {aug.env_id!r}")
    if (orig.obs_dim, orig.act_dim) != (aug.obs_dim, aug.act_dim):
        raise EvalError(
            f"stores disagree in shape: original obs {orig.obs_dim}/act {orig.act_dim}, "
            f"augmented obs {aug.obs_dim}/act {aug.act_dim}"
        )
    _check_roles(orig, aug)
    return orig, aug


def _same_store(recorded: object, path: Path) -> bool:
    return Path(str(recorded)).resolve() == Path(path).resolve()


def _check_roles(orig, aug) -> None:
    """Refuse a pair whose provenance shows --original and --augmented swapped: the report would call the
    generated data original and judge the source against it."""
    o_src, a_src = orig.provenance.get("source_store"), aug.provenance.get("source_store")
    method = orig.provenance.get("method") or "augmentation"
    if o_src and (_same_store(o_src, aug.path) or not a_src):
        made = "from --augmented " + str(aug.path) if _same_store(o_src, aug.path) else "from " + str(o_src)
        raise EvalError(f"--original {orig.path} is a {method} store made {made}: --original and "
                        "--augmented look swapped")


def evaluate_quality(
    original: str,
    augmented: str,
    *,
    samples: int = 1_000_000,
    segments: int = 2000,
    workers: int = 1,
    seed: int = 0,
    device: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> QualityResult:
    """Dynamic MSE, oracle reward and novelty of the store ``augmented`` against ``original`` (GTA 5.4, D), the
    reward sums of whole generated segments (F.7) and the controllability of their returns (F.6).

    ``samples`` transitions of the augmented store are drawn (seeded by ``seed``) and stepped through the
    environment's oracle in ``workers`` processes, together with up to ``segments`` whole segments; ``device``
    runs the nearest-neighbour search of the novelty (None: CUDA when available)."""
    if samples < 1 or segments < 0:
        raise EvalError(f"samples must be >= 1 and segments >= 0, got {samples} and {segments}")
    if not 0 <= seed < 2**32:
        raise EvalError(f"seed must be in [0, 2^32), got {seed}")
    orig, aug = _open_pair(original, augmented)
    warnings = []
    source = aug.provenance.get("source_store")
    if source and not _same_store(source, orig.path):
        warnings.append(f"{aug.path.name} was made from {source}, not from {orig.path}: the metrics compare it "
                        "with other data than its source")
    kwargs = dict(orig.attrs.get("env_kwargs") or {}) | dict(env_kwargs or {})
    spec = OracleSpec.create(aug.env_id, aug.obs_dim, aug.act_dim, orig.attrs.get("observation_layout"), kwargs)
    rng = np.random.default_rng(seed)
    a = _augmented_arrays(aug)
    rows, seg_ids, seg_rows = _choose_rows(rng, aug, samples, segments)
    all_rows = np.union1d(rows, seg_rows)

    def tick(stage: str, total: int):
        return (lambda k: progress(stage, k, total)) if progress else None

    batch = run_oracle(spec, a["observations"][all_rows], a["actions"][all_rows], workers=workers,
                       progress=tick("oracle", len(all_rows)))
    o_obs, o_act = orig.array("observations"), orig.array("actions")
    o_rew = orig.array("rewards").astype(np.float64)
    obs_z, act_z = M.ZScore.fit(o_obs), M.ZScore.fit(o_act)
    oracle = _oracle_metrics(spec, batch, np.searchsorted(all_rows, rows), rows, a, o_obs, o_rew, obs_z)
    out: dict[str, Any] = {
        "env_id": aug.env_id,
        "original": str(orig.path),
        "augmented": str(aug.path),
        "original_transitions": int(len(o_obs)),
        "augmented_transitions": int(len(a["observations"])),
        "augmented_segments": int(aug.num_episodes),
        "samples": int(len(rows)),
        **{k: oracle.pop(k) for k in ("valid_samples", "exact_samples", "original_exact_transitions", "flags")},
        "seed": int(seed),
        **oracle,  # the headline metrics, then with_clipped_states
        "warnings": warnings,
    }
    nov = M.novelty(a["observations"][rows], a["actions"][rows], o_obs, o_act, obs_z=obs_z, act_z=act_z,
                    device=device, progress=tick("novelty", 3 * len(rows)))
    out.update(nov.as_dict())
    out["novelty_device"] = str(M._torch_device(device))
    result = QualityResult(out)
    _segment_reward_sums(result, rng, aug, orig, batch, a["rewards"], o_rew, all_rows, seg_ids, seg_rows)
    _controllability(result, aug, a["rewards"])
    return result


def _augmented_arrays(aug: TrajectoryStore) -> dict[str, np.ndarray]:
    """The augmented store's columns, checked to be finite (rewards as float64)."""
    a = {name: aug.array(name) for name in ("observations", "actions", "next_observations", "terminals")}
    a["rewards"] = aug.array("rewards").astype(np.float64)
    for name in ("observations", "actions", "next_observations", "rewards"):
        if not np.isfinite(a[name]).all():
            raise EvalError(f"{aug.path}: data/{name} contains NaN or inf")
    return a


def _choose_rows(rng: np.random.Generator, aug: TrajectoryStore, samples: int,
                 segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampled transitions (sorted rows), and the whole segments of F.7 (their ids and rows): short ones
    only, i.e. generated sub-trajectories, not a SynthER-style single block."""
    n_aug = aug.num_transitions
    rows = np.sort(rng.choice(n_aug, size=min(samples, n_aug), replace=False))
    ends, starts = aug.episode_ends, aug.episode_starts
    short = np.flatnonzero(ends - starts <= 1000)
    seg_ids = np.sort(rng.choice(short, size=min(segments, len(short)), replace=False)) if len(short) else short
    seg_rows = (np.concatenate([np.arange(starts[i], ends[i]) for i in seg_ids]) if len(seg_ids)
                else np.zeros(0, dtype=np.int64))
    return rows, seg_ids, seg_rows


def _oracle_metrics(spec: OracleSpec, batch: Any, pos: np.ndarray, rows: np.ndarray, a: dict[str, np.ndarray],
                    o_obs: np.ndarray, o_rew: np.ndarray, obs_z: M.ZScore) -> dict[str, Any]:
    """Dynamic MSE and rewards of the sampled rows against the oracle (``batch`` at positions ``pos``): the
    headline over the transitions whose state is exactly known, and ``with_clipped_states`` over every valid one."""
    valid, exact = batch.valid[pos], batch.exact[pos]
    if not valid.any():
        raise EvalError("the oracle could reconstruct none of the sampled transitions (all flagged)")
    if not exact.any():
        raise EvalError(f"none of the {int(valid.sum())} usable sampled transitions has an exactly known state "
                        "(every one has a velocity at the observation's clip bound)")
    true_next, true_rew = batch.next_observations[pos], batch.rewards[pos]
    gen_rew, gen_next, gen_term = a["rewards"][rows], a["next_observations"][rows], a["terminals"][rows]

    def metrics(use: np.ndarray, o_use: np.ndarray) -> dict[str, Any]:
        """Over the sampled rows ``use``, baseline over the original rows ``o_use``."""
        return {
            "samples": int(use.sum()),
            "dynamic_mse": M.dynamic_mse(gen_next, true_next, obs_z, use),
            "oracle_reward": float(true_rew[use].mean()),
            "generated_reward": float(gen_rew[use].mean()),
            "reward_abs_error": float(np.abs(gen_rew - true_rew)[use].mean()),
            "original_transitions": int(o_use.sum()),
            "original_reward": float(o_rew[o_use].mean()) if o_use.any() else None,
            "terminal_disagreement": float((gen_term != batch.terminated[pos])[use].mean()),
        }

    headline = metrics(exact, ~clipped_states(spec, o_obs))
    return {
        "valid_samples": int(valid.sum()),
        "exact_samples": headline.pop("samples"),
        "original_exact_transitions": headline.pop("original_transitions"),
        "flags": {k: int(np.count_nonzero(batch.flags[pos] & bit)) for bit, k in _flag_bits()},
        **headline,
        "with_clipped_states": metrics(valid, np.ones(len(o_obs), dtype=bool)),
    }


def _segment_reward_sums(result: QualityResult, rng: np.random.Generator, aug: TrajectoryStore,
                         orig: TrajectoryStore, batch: Any, a_rew: np.ndarray, o_rew: np.ndarray,
                         all_rows: np.ndarray, seg_ids: np.ndarray, seg_rows: np.ndarray) -> None:
    """F.7: reward sums of whole generated sub-trajectories, as generated and as the oracle gives them, beside
    the sums over windows of the same length in the original data."""
    out = result.metrics
    if not len(seg_ids):
        out["segment_reward_sums"] = {"note": "augmented store has no segments of <= 1000 transitions"}
        return
    lengths = (aug.episode_ends - aug.episode_starts)[seg_ids]
    seg_pos = np.searchsorted(all_rows, seg_rows)
    seg_local_ends = np.cumsum(lengths)
    gen_sums = M.segment_returns(a_rew[seg_rows], seg_local_ends)
    ora_sums = M.segment_returns(batch.rewards[seg_pos], seg_local_ends)
    seg_ok = np.add.reduceat((~batch.valid[seg_pos]).astype(np.int64), seg_local_ends - lengths) == 0
    horizon = int(np.median(lengths))
    orig_sums = M.window_returns(o_rew, orig.episode_ends, horizon)
    if len(orig_sums) > 100_000:
        orig_sums = rng.choice(orig_sums, 100_000, replace=False)
    result.reward_sums = {"original": orig_sums, "generated": gen_sums[seg_ok], "oracle": ora_sums[seg_ok]}
    out["segment_reward_sums"] = {
        "horizon": horizon,
        "segments": int(len(seg_ids)),
        "valid_segments": int(seg_ok.sum()),
        "original_mean": float(orig_sums.mean()) if len(orig_sums) else None,
        "generated_mean": float(gen_sums[seg_ok].mean()) if seg_ok.any() else None,
        "oracle_mean": float(ora_sums[seg_ok].mean()) if seg_ok.any() else None,
    }


def _controllability(result: QualityResult, aug: TrajectoryStore, a_rew: np.ndarray) -> None:
    """F.6: the correlation of each segment's condition with the return it was generated with."""
    if "condition" not in aug.meta_keys():
        result.metrics["condition_correlation"] = {
            "note": "augmented store has no meta/condition: conditioning correlation (F.6) not computed"
        }
        return
    cond = aug.meta("condition")
    gen_ret = M.segment_returns(a_rew, aug.episode_ends)
    result.metrics["condition_correlation"] = M.condition_correlation(cond, gen_ret)
    result.condition, result.generated_return = np.asarray(cond, dtype=np.float64).reshape(-1), gen_ret


def _flag_bits():
    from gta_eval.oracle import FLAG_NAMES

    return FLAG_NAMES.items()

