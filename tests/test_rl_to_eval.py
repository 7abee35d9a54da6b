"""Stage D -> E across packages: what `gta-rl train` writes is what `gta-eval compare` reads (scores and
labels), through the files only, as a user's pipeline composes them (tools/pipeline.sh, tools/reproduce.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gta_data import StoreWriter, TrajectoryStore
from gta_data.cli import app as data_app
from gta_eval.cli import app as eval_app
from gta_eval.stats import read_run_dir
from gta_rl.cli import app as rl_app

runner = CliRunner()


def test_gta_rl_runs_are_read_by_gta_eval_compare(tmp_path):
    orig, aug = tmp_path / "original.zarr", tmp_path / "augmented.zarr"
    res = runner.invoke(data_app, ["make", "pointmaze-umaze", "--out", str(orig), "--size", "2000"])
    assert res.exit_code == 0, res.output
    # A stand-in for an augmented store: the same transitions, marked as GTA output in the provenance.
    src = TrajectoryStore.open(orig)
    lo, hi = src.ref_scores
    with StoreWriter(aug, env_id=src.env_id, obs_dim=src.obs_dim, act_dim=src.act_dim, ref_min_score=lo,
                     ref_max_score=hi, provenance={"method": "GTA"}) as writer:
        writer.add_transitions(src.load(), src.episode_ends)
    runs = {}
    for name, data in (("original", [orig]), ("gta", [orig, aug])):
        runs[name] = tmp_path / f"td3bc-{name}"
        args = ["train", "td3bc", *[a for d in data for a in ("--data", str(d))], "--seeds", "0-1", "--steps", "20",
                "--batch-size", "32", "--eval-every", "10", "--eval-episodes", "1", "--device", "cpu",
                "--out", str(runs[name])]
        res = runner.invoke(rl_app, args)
        assert res.exit_code == 0, res.output

    for name, method in (("original", "none"), ("gta", "GTA")):
        result = read_run_dir(runs[name])
        final = json.loads((runs[name] / "results.json").read_text())["seeds"]
        assert result.method == method and result.algorithm == "td3bc" and result.task == "maze2d-umaze"  # the store's dataset name
        assert result.scores == {int(k): v["final_score"] for k, v in final.items()}
        assert [list(result.curves[k][0]) for k in (0, 1)] == [[10, 20], [10, 20]]  # both evaluations

    out = tmp_path / "compare"
    res = runner.invoke(eval_app, ["compare", str(runs["original"]), str(runs["gta"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| td3bc | GTA |" in res.output and "| td3bc | none |" in res.output
