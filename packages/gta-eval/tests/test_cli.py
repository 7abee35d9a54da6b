"""End to end: ``gta-eval quality`` and ``gta-eval compare`` write complete reports; bad input is a
one-line error with exit code 1 and leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gta_data import Transitions, gather_windows, window_starts, write_store
from gta_eval.cli import app

runner = CliRunner()


def _windows_store(path, store, *, noise: float, seed: int = 0, condition: bool = True):
    """An 'augmented' store of H=31 windows cut from ``store`` (GTA segments), optionally noised."""
    data = store.load()
    rng = np.random.default_rng(seed)
    starts = rng.choice(window_starts(store.episode_ends, 31), 8, replace=False)
    w = gather_windows(data, starts, 31)
    obs = w.observations + noise * rng.normal(size=w.observations.shape)
    act = w.actions + noise * rng.normal(size=w.actions.shape)
    tr = Transitions(
        observations=obs[:, :-1].reshape(-1, store.obs_dim), actions=act.reshape(-1, store.act_dim),
        rewards=w.rewards.reshape(-1), next_observations=obs[:, 1:].reshape(-1, store.obs_dim),
        terminals=w.terminals.reshape(-1), timeouts=np.tile(np.arange(31) == 30, 8),
    )
    meta = {"source_start": starts}
    if condition:
        meta["condition"] = w.rewards.sum(1) * 1.3 + rng.normal(size=8)
    return write_store(path, tr, np.arange(1, 9) * 31, env_id=store.env_id, episode_meta=meta)


def test_quality_of_original_windows_is_exact(cheetah, tmp_path):
    _windows_store(tmp_path / "aug.zarr", cheetah, noise=0.0)
    out = tmp_path / "report"
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / "aug.zarr"),
                              "--samples", "200", "--workers", "2", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "quality.json").read_text())
    assert m["samples"] == 200 and m["valid_samples"] == 200
    assert m["dynamic_mse"] < 1e-9
    assert m["novelty_state_action"] == 0.0 and m["novelty_state"] == 0.0 and m["novelty_action"] == 0.0
    assert m["reward_abs_error"] < 1e-5
    assert m["oracle_reward"] == pytest.approx(m["generated_reward"], abs=1e-5)
    assert m["segment_reward_sums"]["horizon"] == 31 and m["segment_reward_sums"]["valid_segments"] == 8
    assert m["condition_correlation"]["segments"] == 8 and m["condition_correlation"]["pearson_r"] > 0.5
    for name in ("README.md", "quality.png", "reward_sums.png", "condition.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "quality.png").read_bytes()[:4] == b"\x89PNG"


def test_quality_headline_is_over_exactly_known_states(tmp_path):
    # Walker2d clips velocities to +-10 in the observation; random play has many such rows. The data judged
    # against itself: over the exactly known states (the headline) the oracle reproduces the data to float
    # precision; the rows stepped from a clipped velocity put a floor under the 'with clipped states' version.
    from gta_data import TrajectoryStore
    from gta_data.cli import app as data_app

    path = tmp_path / "walker.zarr"
    res = runner.invoke(data_app, ["make", "random", "--env", "Walker2d-v5", "--size", "2000", "--out", str(path)])
    assert res.exit_code == 0, res.output
    data = TrajectoryStore.open(path).load()
    clipped = np.any(np.abs(data.observations[:, 8:]) >= 10.0, axis=1)
    assert 0 < clipped.sum() < 2000
    out = tmp_path / "report"
    res = runner.invoke(app, ["quality", "--original", str(path), "--augmented", str(path),
                              "--samples", "2000", "--workers", "1", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "quality.json").read_text())
    wc = m["with_clipped_states"]
    assert m["valid_samples"] == wc["samples"] == 2000 and m["flags"]["clipped_state"] == int(clipped.sum())
    assert m["exact_samples"] == m["original_exact_transitions"] == int((~clipped).sum())
    assert m["dynamic_mse"] < 1e-10 < 1e-3 < wc["dynamic_mse"]
    assert m["reward_abs_error"] < 1e-5 < 1e-3 < wc["reward_abs_error"]
    assert m["oracle_reward"] == pytest.approx(m["original_reward"], abs=1e-5)
    assert m["original_reward"] == pytest.approx(float(data.rewards[~clipped].mean()), abs=1e-6)
    assert wc["original_reward"] == pytest.approx(float(data.rewards.mean()), abs=1e-6)
    text = (out / "README.md").read_text()
    assert "| exactly known states | with clipped states |" in text and "**Clipped velocities**" in text
    assert f"over {m['exact_samples']}/2000 sampled transitions with exactly known states" in res.output


def test_quality_refuses_swapped_stores(cheetah, tmp_path):
    # An augmented store records its source: given the other way round, the report would call generated data
    # original. One line, exit 1, no report; the right order works.
    from gta_data import StoreWriter, TrajectoryStore

    src = TrajectoryStore.open(cheetah.path)
    aug = tmp_path / "aug.zarr"
    with StoreWriter(aug, env_id=src.env_id, obs_dim=src.obs_dim, act_dim=src.act_dim,
                     provenance={"method": "S4RL", "source_store": str(cheetah.path)}) as w:
        w.add_transitions(src.load(), src.episode_ends)
    out = tmp_path / "report"
    res = runner.invoke(app, ["quality", "--original", str(aug), "--augmented", str(cheetah.path),
                              "--samples", "50", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"error: --original {aug} is a S4RL store made from --augmented {cheetah.path}: "
                                  "--original and --augmented look swapped")
    assert not out.exists() and not list(tmp_path.glob(".report.tmp-*"))
    # An augmented "original" beside a plain "augmented" store made elsewhere: swapped just the same.
    other = tmp_path / "other.zarr"
    write_store(other, src.load(), src.episode_ends, env_id=src.env_id)
    res = runner.invoke(app, ["quality", "--original", str(aug), "--augmented", str(other), "--out", str(out)])
    assert res.exit_code == 1 and "look swapped" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(aug),
                              "--samples", "50", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "quality.json").read_text())["warnings"] == []


def test_quality_readme_reads_the_numbers(cheetah, tmp_path):
    # Generated rewards 3x the true ones, actions past the bounds (the fixture's random actions go 20% past
    # them): the report says so in words.
    from gta_data import TrajectoryStore

    src = TrajectoryStore.open(cheetah.path).load()
    tr = Transitions(src.observations, src.actions, src.rewards * 3.0, src.next_observations,
                     src.terminals, src.timeouts)
    aug = write_store(tmp_path / "aug.zarr", tr, cheetah.episode_ends, env_id="HalfCheetah-v5")
    out = tmp_path / "report"
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(aug.path),
                              "--samples", "400", "--workers", "1", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "quality.json").read_text())
    text = (out / "README.md").read_text()
    outside = float(np.mean(np.any(np.abs(tr.actions) > 1.0, axis=1)))
    assert 0.3 < outside < 1.0 and m["flags"]["action_out_of_range"] == round(400 * outside)
    assert f"{100 * outside:.3g}% of the sampled generated actions lie outside the action bounds" in text
    ratio = m["generated_reward"] / m["oracle_reward"]
    assert f"the generated reward is {ratio:.3g}x the oracle's" in text and abs(ratio - 3.0) < 1e-4
    assert "**Better data?**" in text and "| exactly known states |" not in text  # HalfCheetah clips nothing


def test_quality_warns_when_the_original_is_not_the_augmented_source(cheetah, tmp_path):
    from gta_data import StoreWriter, TrajectoryStore

    src = TrajectoryStore.open(cheetah.path)
    with StoreWriter(tmp_path / "aug.zarr", env_id=src.env_id, obs_dim=src.obs_dim, act_dim=src.act_dim,
                     provenance={"method": "GTA", "source_store": str(tmp_path / "elsewhere.zarr")}) as w:
        w.add_transitions(src.load(), src.episode_ends)
    out = tmp_path / "report"
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / "aug.zarr"),
                              "--samples", "50", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "quality.json").read_text())
    assert len(m["warnings"]) == 1 and "elsewhere.zarr" in m["warnings"][0]
    assert "**Warning**" in (out / "README.md").read_text()


def test_quality_grows_with_noise_and_handles_missing_condition(cheetah, tmp_path):
    values = []
    for i, noise in enumerate((0.01, 0.1)):
        _windows_store(tmp_path / f"aug{i}.zarr", cheetah, noise=noise, condition=False)
        out = tmp_path / f"r{i}"
        res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / f"aug{i}.zarr"),
                                  "--samples", "100", "--workers", "1", "--device", "cpu", "--out", str(out)])
        assert res.exit_code == 0, res.output
        m = json.loads((out / "quality.json").read_text())
        assert "no meta/condition" in m["condition_correlation"]["note"]
        assert "no meta/condition" in (out / "README.md").read_text()
        values.append((m["dynamic_mse"], m["novelty_state_action"]))
    assert 0 < values[0][0] < values[1][0] and 0 < values[0][1] < values[1][1]
    chart = tmp_path / "chart.png"
    res = runner.invoke(app, ["chart", str(tmp_path / "r0"), str(tmp_path / "r1"), "--labels", "small,big", "--out", str(chart)])
    assert res.exit_code == 0, res.output
    assert chart.stat().st_size > 1000
    args = ["chart", str(tmp_path / "r0"), str(tmp_path / "r1")]
    res = runner.invoke(app, [*args, "--out", str(chart)])
    assert res.exit_code == 1 and "already exists (pass --overwrite" in res.output
    assert runner.invoke(app, [*args, "--out", str(chart), "--overwrite"]).exit_code == 0
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "chart")])
    assert res.exit_code == 1 and "must name a .png file" in res.output
    # --overwrite replaces reports only, never another folder.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / "aug0.zarr"),
                              "--samples", "20", "--device", "cpu", "--out", str(mine), "--overwrite"])
    assert res.exit_code == 1 and "not a gta-eval report" in res.output and (mine / "notes.txt").exists()
    (mine / "results.json").write_text("{}")  # what a gta-rl run directory has: still not a report
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / "aug0.zarr"),
                              "--samples", "20", "--device", "cpu", "--out", str(mine), "--overwrite"])
    assert res.exit_code == 1 and "not a gta-eval report" in res.output
    assert list(tmp_path.glob(".chart*")) == []


def test_quality_bad_input(cheetah, tmp_path, envdata):
    tr, ends = envdata.collect("Hopper-v5", 60)
    write_store(tmp_path / "hopper.zarr", tr, ends, env_id="Hopper-v5")
    res = runner.invoke(app, ["quality", "--original", str(cheetah.path), "--augmented", str(tmp_path / "hopper.zarr"),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert res.output.strip() == "error: stores are of different envs: original 'HalfCheetah-v5', augmented 'Hopper-v5'"
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.tmp-*"))

    rng = np.random.default_rng(0)
    cp = Transitions(rng.normal(size=(20, 4)), rng.normal(size=(20, 1)), np.ones(20), rng.normal(size=(20, 4)),
                     np.zeros(20, bool), np.zeros(20, bool))
    write_store(tmp_path / "cp.zarr", cp, np.array([20]), env_id="CartPole-v1")
    res = runner.invoke(app, ["quality", "--original", str(tmp_path / "cp.zarr"), "--augmented", str(tmp_path / "cp.zarr"),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no oracle for env 'CartPole-v1'" in res.output
    res = runner.invoke(app, ["quality", "--original", str(tmp_path / "missing.zarr"), "--augmented", str(cheetah.path),
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no store at" in res.output and len(res.output.strip().splitlines()) == 1


def _run(root, name, config, seeds):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for seed, scores in seeds.items():
        (d / f"seed_{seed}").mkdir()
        (d / f"seed_{seed}" / "metrics.jsonl").write_text(
            "\n".join(json.dumps({"step": 5000 * (i + 1), "normalized_score": v}) for i, v in enumerate(scores)) + "\n")


def test_compare_report(tmp_path):
    runs = tmp_path / "runs"
    for method, base in (("none", 48.0), ("gta", 55.0)):
        for task in ("halfcheetah-medium", "hopper-medium"):
            _run(runs, f"{method}-{task}", {"task": task, "algorithm": "td3bc", "augmentation": method},
                 {k: [base - 10, base - 3 + k, base + k * 0.5] for k in range(4)})
    for mu in (0.25, 0.5):
        for alpha in (1.1, 1.3):
            _run(runs, f"sens-{mu}-{alpha}", {"task": "halfcheetah-medium", "algorithm": "td3bc", "augmentation": "gta",
                                              "mu": mu, "alpha": alpha}, {0: [50 + mu * alpha], 1: [51 + mu * alpha]})
    out = tmp_path / "report"
    res = runner.invoke(app, ["compare", *map(str, sorted(runs.iterdir())), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    avg = {a["method"]: a for a in doc["average"]}
    assert avg["gta"]["mean"] == pytest.approx(55.75) and avg["none"]["mean"] == pytest.approx(48.75)
    assert any(t["task"] == "average" and t["method"] == "gta" and t["p_value"] < 0.05 for t in doc["welch"])
    assert len(doc["sensitivity"]) == 1
    for name in ("README.md", "scores.md", "scores.csv", "learning_curves.png", "sensitivity_0.png"):
        assert (out / name).stat().st_size > 100
    # One std convention, said in every table gta-eval writes and in the console output.
    for text in ((out / "scores.md").read_text(), (out / "README.md").read_text(), res.output):
        assert "mean ± std (ddof=1) over 4 seeds" in text
    assert (out / "scores.csv").read_text().startswith("algorithm,method,task,mean,std_ddof1,seeds\n")
    gta = next(c for c in doc["table"] if c["method"] == "gta" and c["task"] == "hopper-medium")
    assert gta["std"] == pytest.approx(float(np.std([55 + 0.5 * k for k in range(4)], ddof=1)))
    res = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--out", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 1 and "has no results" in res.output and not (tmp_path / "r2").exists()
