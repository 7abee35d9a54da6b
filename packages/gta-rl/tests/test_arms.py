"""Arms: runs that differ in their data trained as one stack (``gta-rl train --arm``), evaluation episodes per
training seed, and the protocol defaults of a results row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gta_rl.algorithms import build_config, match_preset
from gta_rl.buffer import OfflineData, StackedData, load_training_data
from gta_rl.cli import app
from gta_rl.rng import SeedStreams
from gta_rl.run_eval import default_eval_episodes, env_seeds
from gta_rl.training import ResolvedRun, RunConfig, RunError, train, train_arms

TINY = {"td3bc": {"hidden": [32, 32]}, "iql": {"hidden": [32, 32]}, "dt": {},
        "cql": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "n_actions": 3},
        "mcq": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "vae_hidden": [16, 16], "num_sampled_actions": 3}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from gta_rl.toy import write_point_dataset

    root = tmp_path_factory.mktemp("arms")
    a = root / "a.zarr"
    b = root / "b.zarr"
    write_point_dataset(a, episodes=60, expert_prob=0.2, seed=0)
    write_point_dataset(b, episodes=40, expert_prob=0.9, seed=1)
    return str(a), str(b)


def _state(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoint.safetensors"))


def _cfg(algorithm="td3bc", **kw):
    base = dict(seeds=(0, 1), steps=24, batch_size=16, eval_every=12, eval_episodes=2, log_every=6,
                overrides=TINY[algorithm])
    return RunConfig(algorithm, (), **(base | kw))


def test_stacked_data_draws_each_groups_own_rows(stores):
    a, _ = load_training_data([stores[0]])
    ab, _ = load_training_data(list(stores))
    stacked = StackedData([a, ab], [2, 3])
    seeds = torch.tensor([0, 1, 0, 1, 2])
    step = torch.tensor(7)
    idx = stacked.indices(SeedStreams(seeds, step), 32)  # [5, 32]
    np.testing.assert_array_equal(idx[:2], a.indices(SeedStreams(seeds[:2], step), 32))
    np.testing.assert_array_equal(idx[2:] - a.num_transitions, ab.indices(SeedStreams(seeds[2:], step), 32))
    batch = stacked.sample(SeedStreams(seeds, step), 32)
    alone = ab.sample(SeedStreams(seeds[2:], step), 32)
    torch.testing.assert_close(batch.observations[2:], alone.observations, rtol=0, atol=0)
    torch.testing.assert_close(batch.rewards[2:], alone.rewards, rtol=0, atol=0)
    # each group acts with its own state statistics
    assert stacked.obs_mean.shape == (5, 1, a.obs_dim)
    np.testing.assert_array_equal(stacked.obs_mean[0, 0], a.obs_mean)
    np.testing.assert_array_equal(stacked.obs_std[4, 0], ab.obs_std)
    assert not np.array_equal(a.obs_mean, ab.obs_mean)
    assert isinstance(a, OfflineData)


@pytest.mark.parametrize("algorithm", ["td3bc", "iql", "cql", "mcq"])
def test_arms_train_as_they_would_alone(stores, tmp_path, algorithm):
    arms = {"orig": ((stores[0],), tmp_path / "stack" / "orig"), "aug": (stores, tmp_path / "stack" / "aug")}
    cfg = _cfg(algorithm)
    results = train_arms(cfg, arms)
    for name, (paths, out) in arms.items():
        alone = train(RunConfig(**{**cfg.__dict__, "data": paths}), tmp_path / f"alone-{name}")
        a, b = _state(out), _state(tmp_path / f"alone-{name}")
        assert a.keys() == b.keys()
        for key in a:  # the same arithmetic member by member: equal to the bit on the CPU
            assert torch.equal(a[key], b[key]), key
        assert a["model.obs_mean"].ndim == 1  # shared within an arm, as in a run trained alone
        for seed in ("0", "1"):
            assert results[name]["seeds"][seed]["final_score"] == alone["seeds"][seed]["final_score"]
        config = json.loads((out / "config.json").read_text())
        assert config["arm"] == name and config["arms"] == ["orig", "aug"] and config["data"] == list(paths)
        assert json.loads((out / "results.json").read_text())["seeds"].keys() == {"0", "1"}
    # the arms saw different data, so they learned different networks
    orig, aug = _state(arms["orig"][1]), _state(arms["aug"][1])
    assert any(not torch.equal(orig[k], aug[k]) for k in orig if k.startswith("model.actor"))


def test_arms_resume_exactly(stores, tmp_path):
    def arms(root):
        return {"orig": ((stores[0],), root / "orig"), "aug": (stores, root / "aug")}

    cfg = _cfg()
    train_arms(cfg, arms(tmp_path / "whole"))
    train_arms(cfg, arms(tmp_path / "cut"), stop_after=12)
    assert not (tmp_path / "cut" / "orig" / "results.json").exists()
    train_arms(cfg, arms(tmp_path / "cut"), resume=True)
    for name in ("orig", "aug"):
        a, b = _state(tmp_path / "whole" / name), _state(tmp_path / "cut" / name)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
        whole = json.loads((tmp_path / "whole" / name / "results.json").read_text())
        cut = json.loads((tmp_path / "cut" / name / "results.json").read_text())
        assert whole["seeds"] == cut["seeds"]


def test_arms_refusals(stores, tmp_path):
    with pytest.raises(RunError, match="its own run directory"):
        train_arms(_cfg(), {"a": ((stores[0],), tmp_path / "x"), "b": (stores, tmp_path / "x")})
    with pytest.raises(RunError, match="not dt"):
        train_arms(_cfg("dt"), {"a": ((stores[0],), tmp_path / "a"), "b": (stores, tmp_path / "b")})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_arms_with_other_settings_are_refused_before_anything_is_written(stores, tmp_path, monkeypatch):
    # Each arm resolves its preset from its own first store; arms that end up with other settings (one
    # agent config serves the whole stack) are refused.
    import dataclasses

    import gta_rl.stack as stack_mod

    real = stack_mod.resolve_run

    def resolve(cfg, paths, saved, device):
        run, data = real(cfg, paths, saved, device)
        if len(paths) > 1:
            run = dataclasses.replace(run, algorithm_config={**run.algorithm_config, "alpha": 9.0})
        return run, data

    monkeypatch.setattr(stack_mod, "resolve_run", resolve)
    with pytest.raises(RunError, match="differ in algorithm_config"):
        train_arms(_cfg(), {"a": ((stores[0],), tmp_path / "a"), "b": (stores, tmp_path / "b")})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_arms(stores, tmp_path):
    out = tmp_path / "row"
    args = ["train", "td3bc", "--arm", f"none={stores[0]}", "--arm", f"both={stores[0]},{stores[1]}", "--out",
            str(out), "--seeds", "0-1", "--steps", "8", "--batch-size", "8", "--eval-every", "0", "--eval-episodes",
            "1", "--set", "hidden=[16]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "arm none" in result.output and "arm both" in result.output
    for name in ("none", "both"):
        assert (out / name / "results.json").exists()
    for bad, message in [(["--arm", "x"], "expected NAME=STORE"), (["--arm", "../x=a.zarr"], "expected NAME=STORE"),
                         (["--arm", f"a={stores[0]}", "--arm", f"a={stores[1]}"], "given twice"),
                         (["--arm", f"a={stores[0]}", "--data", stores[0]], "either --data"), ([], "no training data")]:
        result = CliRunner().invoke(app, ["train", "td3bc", *bad, "--out", str(tmp_path / "bad")])
        assert result.exit_code == 1 and message in result.output, (bad, result.output)
        assert not (tmp_path / "bad").exists()


def test_each_training_seed_plays_its_own_evaluation_episodes():
    def run(seeds, eval_seed, eval_seeding):
        return ResolvedRun(RunConfig("td3bc", ("store",), seeds, eval_seed=eval_seed), {}, "E", 1, 1, 1.0,
                           eval_seeding=eval_seeding)

    assert env_seeds(run([0, 1, 5], 100, "per_seed"), 3) == [[100, 101, 102], [103, 104, 105], [115, 116, 117]]
    # a member plays the same episodes whatever it is stacked with
    assert env_seeds(run([0, 1, 5], 100, "per_seed").with_seeds([5]), 3) == [[115, 116, 117]]
    # runs written before the scheme keep theirs: every seed from eval_seed on
    assert env_seeds(run([0, 1], 3, None), 2) == [[3, 4], [3, 4]]


def test_new_runs_record_the_evaluation_seeding(stores, tmp_path):
    train(RunConfig("td3bc", (stores[0],), (0,), steps=2, batch_size=8, eval_every=0, eval_episodes=1,
                    overrides=TINY["td3bc"]), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["eval_seeding"] == "per_seed"


def test_protocol_defaults():
    # the Decision Transformer evaluates 100 episodes (paper Tables 13-14; CORL's DT configs)
    assert default_eval_episodes("HalfCheetah-v5", "dt") == 100
    assert default_eval_episodes("HalfCheetah-v5", "td3bc") == 10
    # CQL on hopper-medium normalises rewards as CORL's cql/hopper/medium_v2.yaml; its siblings do not
    assert build_config("cql", match_preset("cql", "mujoco/hopper/medium-v0")).normalize_reward
    for name in ("mujoco/hopper/medium-replay-v0", "mujoco/hopper/medium-expert-v0", "mujoco/walker2d/medium-v0"):
        assert not build_config("cql", match_preset("cql", name)).normalize_reward, name


def test_arms_evaluated_in_worker_processes_score_as_in_the_foreground(stores, tmp_path):
    # The workers' CPU policies act with each member's own state statistics ([S, 1, obs] in the stack).
    def arms(root):
        return {"orig": ((stores[0],), root / "orig"), "aug": (stores, root / "aug")}

    here = train_arms(_cfg(eval_overlap=False), arms(tmp_path / "here"))
    there = train_arms(_cfg(eval_async=True), arms(tmp_path / "there"))
    for name in ("orig", "aug"):
        for seed in ("0", "1"):
            assert there[name]["seeds"][seed]["final_score"] == pytest.approx(
                here[name]["seeds"][seed]["final_score"], abs=1e-4)


def test_a_refused_resume_touches_no_arm(stores, tmp_path):
    # The second arm's config no longer matches: the first arm, finished, must keep its results and config.
    arms = {"orig": ((stores[0],), tmp_path / "orig"), "aug": (stores, tmp_path / "aug")}
    train_arms(_cfg(), arms)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = {"orig": arms["orig"], "aug": ((stores[1],), tmp_path / "aug")}
    with pytest.raises(RunError, match="differs in data"):
        train_arms(_cfg(steps=30), changed, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_arms_at_different_steps_are_refused_before_anything_is_written(stores, tmp_path):
    arms = {"orig": ((stores[0],), tmp_path / "orig"), "aug": (stores, tmp_path / "aug")}
    train_arms(_cfg(), arms, stop_after=12)
    train(RunConfig(**{**_cfg().__dict__, "data": (stores[0],)}), tmp_path / "orig", resume=True, stop_after=12)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match=r"different steps \(orig at 24, aug at 12\)"):
        train_arms(_cfg(), arms, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_sigterm_checkpoints_every_arm_at_the_same_step_then_resumes(stores, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "row"
    args = ["train", "td3bc", "--arm", f"orig={stores[0]}", "--arm", f"aug={stores[0]},{stores[1]}", "--out", str(out),
            "--seeds", "0-1", "--steps", "100000", "--batch-size", "16", "--eval-every", "50", "--eval-episodes", "1",
            "--log-every", "50", "--set", "hidden=[16]", "--device", "cpu"]
    code = "import sys; from gta_rl.cli import app; sys.argv[0] = 'gta-rl'; app()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not (out / "aug" / "checkpoint.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step" in err and "--resume" in err
    steps = {json.loads(_meta(out / name))["step"] for name in ("orig", "aug")}
    assert len(steps) == 1
    assert not (out / "orig" / "results.json").exists()
    step = steps.pop()
    resumed = CliRunner().invoke(app, [*args[:args.index("--steps") + 1], str(step + 50),
                                       *args[args.index("--steps") + 2:], "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "aug" / "results.json").read_text())["step"] == step + 50


def _meta(path):
    from safetensors import safe_open

    with safe_open(str(path / "checkpoint.safetensors"), framework="pt") as f:
        return f.metadata()["meta"]


def test_cli_arms_refuse_a_file_as_out(stores, tmp_path):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["train", "td3bc", "--arm", f"a={stores[0]}", "--out", str(tmp_path / "file")])
    assert result.exit_code == 1 and "is a file" in result.output


def test_cli_threads_rule(stores, tmp_path, monkeypatch):
    # On a CPU device: one thread unless OMP_NUM_THREADS or --threads says otherwise; --threads 0 refused.
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    base = ["train", "td3bc", "--data", stores[0], "--seeds", "0", "--steps", "2", "--batch-size", "8",
            "--eval-episodes", "0", "--set", "hidden=[8]", "--device", "cpu"]
    try:
        torch.set_num_threads(2)
        assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a")]).exit_code == 0
        assert torch.get_num_threads() == 1
        assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--threads", "2"]).exit_code == 0
        assert torch.get_num_threads() == 2
        bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "c"), "--threads", "0"])
        assert bad.exit_code == 1 and "--threads must be >= 1" in bad.output and not (tmp_path / "c").exists()
    finally:
        torch.set_num_threads(before)
