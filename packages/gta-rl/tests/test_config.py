"""RunConfig (defaults and checks declared once) and ResolvedRun (config.json): the round trip through the file,
reading a config.json written before later keys existed, and the public API."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from gta_rl.config import ResolvedRun, RunConfig, RunError, default_of
from gta_rl.seeds import SeedSpecError

# The keys of a config.json written before --bf16, --fused-mlp, --log-to, background evaluation and per-seed
# evaluation episodes (the oldest run directories a resume or `gta-rl evaluate` may meet).
OLD_CONFIG = {
    "algorithm": "td3bc", "algorithm_config": {"hidden": [16, 16], "alpha": 2.5}, "preset": None,
    "data": ["a.zarr"], "seeds": [0, 3], "steps": 40, "batch_size": 16, "eval_every": 20, "eval_episodes": 2,
    "log_every": 10, "checkpoint_every": 0, "mix_ratio": None, "device": "cpu", "compile": False,
    "cuda_graph": False, "overrides": {"hidden": [16, 16]}, "eval_seed": 0, "env_id": "GtaPoint-v0",
    "env_kwargs": {}, "obs_dim": 2, "act_dim": 2, "max_action": 1.0, "ref_scores": [0.0, 1.0],
    "observation_layout": None, "num_transitions": [1000], "reward_factor": 1.0,
}


def test_run_config_normalises_and_checks_at_construction():
    cfg = RunConfig("td3bc", data=["a", "b"], seeds="0-2,5", log_to="csv", preset="none")
    assert cfg.data == ("a", "b") and cfg.seeds == (0, 1, 2, 5) and cfg.log_to == ("csv",) and cfg.preset is None
    assert RunConfig("iql", data="a").data == ("a",) and RunConfig("iql", ("a",)).seeds == default_of("seeds")
    for bad, message in [({"steps": 0}, "positive"), ({"eval_every": -1}, "eval_every"), ({"seeds": ()}, "no seeds"),
                         ({"checkpoint_every": -5}, "checkpoint_every"), ({"log_to": "nope"}, "unknown sink")]:
        with pytest.raises(RunError, match=message):
            RunConfig("td3bc", ("a",), **({"seeds": (0,)} | bad))
    with pytest.raises(SeedSpecError):
        RunConfig("td3bc", ("a",), seeds="3-1")


def test_algorithm_defaults_fill_only_what_was_left_open():
    assert RunConfig("td3bc", ("a",)).with_algorithm_defaults("td3bc").steps == 1_000_000
    dt = RunConfig("dt", ("a",), batch_size=64).with_algorithm_defaults("dt")
    assert (dt.steps, dt.batch_size) == (100_000, 64)


def test_config_json_round_trips(point_store, tmp_path):
    from gta_rl.training import train

    train(RunConfig("td3bc", [str(point_store)], "0,3", steps=4, batch_size=8, eval_every=0, eval_episodes=1,
                    log_every=2, overrides={"hidden": [8, 8]}), tmp_path / "r")
    doc = json.loads((tmp_path / "r" / "config.json").read_text())
    run = ResolvedRun.from_json(doc)
    assert run.seeds == (0, 3) and run.config.steps == 4 and run.config.data == (str(point_store),)
    assert run.eval_seeding == "per_seed" and run.algorithm_config["hidden"] == [8, 8]
    assert run.to_json() == doc
    assert ResolvedRun.from_json(json.loads(json.dumps(run.to_json()))) == run


def test_an_old_config_json_reads_with_the_later_keys_defaulted():
    run = ResolvedRun.from_json(OLD_CONFIG)
    assert run.seeds == (0, 3) and run.ref_scores == (0.0, 1.0) and run.num_transitions == (1000,)
    assert not run.config.bf16 and not run.config.fused_mlp and run.config.log_to == ()
    assert run.config.eval_overlap is True and run.eval_seeding is None and run.arms is None
    doc = run.to_json()
    assert {k: doc[k] for k in OLD_CONFIG} == OLD_CONFIG  # nothing the file said is changed
    # a run that copied its logs to a sink this machine lacks still reads (evaluate, resume elsewhere)
    assert ResolvedRun.from_json({**OLD_CONFIG, "log_to": ["wandb"]}).config.log_to == ("wandb",)
    with pytest.raises(RunError, match="not a gta-rl run"):
        ResolvedRun.from_json({k: v for k, v in OLD_CONFIG.items() if k != "obs_dim"})


def test_an_old_run_directory_still_loads(point_store, tmp_path):
    from gta_rl.training import load_run, train

    train(RunConfig("td3bc", [str(point_store)], (0,), steps=4, batch_size=8, eval_every=0, eval_episodes=1,
                    log_every=2, overrides={"hidden": [8, 8]}), tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    doc = json.loads(path.read_text())
    newer = ("bf16", "fused_mlp", "fullgraph", "tf32", "log_to", "eval_async", "eval_overlap", "eval_seeding")
    path.write_text(json.dumps({k: v for k, v in doc.items() if k not in newer}))
    run, agent, meta = load_run(tmp_path / "r", "cpu")
    assert meta["step"] == 4 and run.eval_seeding is None and agent.act(torch.zeros(1, 3, 2)).shape == (1, 3, 2)


def test_public_api_train_is_the_function(point_store, tmp_path):
    import gta_rl
    from gta_rl import RunConfig as Public
    from gta_rl import train

    assert callable(train) and Public is RunConfig and gta_rl.train is train
    results = train(Public("td3bc", [str(point_store)], steps=2, batch_size=8, eval_every=0, eval_episodes=0,
                           overrides={"hidden": [8, 8]}), tmp_path / "r")
    assert results["step"] == 2 and set(results["seeds"]) == {"0"}


def test_seeds_are_distinct_but_a_stack_of_arms_may_repeat_them():
    with pytest.raises(RunError, match="distinct"):
        RunConfig("td3bc", ("a",), seeds=[0, 0])
    with pytest.raises(RunError, match="distinct"):
        RunConfig("td3bc", ("a",), seeds=[-1])
    # A run read back whose logs went to a sink this machine lacks: other seeds (a stack of two arms' seeds,
    # which repeat) must not check the recorded config again (gta-rl evaluate's worker processes do this).
    run = ResolvedRun.from_json({**OLD_CONFIG, "log_to": ["wandb"]})
    assert run.with_seeds([0, 3, 0, 3]).seeds == (0, 3, 0, 3) and run.seeds == (0, 3)


def test_a_resume_without_steps_runs_to_the_total_it_started_with(point_store, tmp_path):
    from gta_rl.training import train

    cfg = RunConfig("td3bc", [str(point_store)], (0,), steps=6, batch_size=8, eval_every=0, eval_episodes=0,
                    log_every=2, checkpoint_every=2, overrides={"hidden": [8, 8]})
    assert train(cfg, tmp_path / "r", stop_after=2)["step"] == 2  # stopped with a checkpoint at step 2
    results = train(replace(cfg, steps=None), tmp_path / "r", resume=True)
    assert results["step"] == 6  # not the algorithm's default of 1M
    assert json.loads((tmp_path / "r" / "config.json").read_text())["steps"] == 6
