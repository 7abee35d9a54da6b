"""What `gta-rl train` shows off a terminal (CliRunner is not one) and where --log-to copies the metrics."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gta_data.metric_sinks import scalars
from gta_rl.cli import app, final_lines

runner = CliRunner()
ARGS = ["--seeds", "0-1", "--batch-size", "16", "--eval-every", "20", "--eval-episodes", "2", "--log-every", "10",
        "--set", "hidden=[16,16]", "--device", "cpu"]


def _csv_equals_jsonl(seed_dir: Path) -> None:
    records = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    for kind in ("train", "eval"):
        with (seed_dir / f"{kind}.csv").open(newline="") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        expected = [{k: v for k, v in scalars(r).items() if k != "kind"} for r in records if r["kind"] == kind]
        assert rows == expected and rows


def test_train_prints_run_dir_lines_resume_and_rounded_results(point_store, tmp_path, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "0")
    out = tmp_path / "run"
    sinks = "csv,tensorboard" if importlib.util.find_spec("tensorboard") else "csv"
    res = runner.invoke(app, ["train", "td3bc", "--data", str(point_store), "--out", str(out), "--steps", "20",
                              "--log-to", sinks, *ARGS])
    assert res.exit_code == 0, res.output
    assert f"run directory: {out}" in res.output.splitlines()[0]
    assert re.search(r"^td3bc 2 seeds: 11/20 \(55%\), [\d.]+ steps/s, .*, loss [\d.]+$", res.output, re.M), res.output
    assert json.loads((out / "config.json").read_text())["log_to"] == sinks.split(",")
    res = runner.invoke(app, ["train", "td3bc", "--data", str(point_store), "--out", str(out), "--steps", "40",
                              "--resume", "--log-to", sinks, *ARGS])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[:2] == [f"run directory: {out}", "resuming at step 20"]
    assert re.search(r"^td3bc 2 seeds: 30/40 .*, loss [\d.]+, score -?\d+\.\d\d$", res.output, re.M), res.output
    assert re.fullmatch(r"seed 0: final -?\d+\.\d\d, best -?\d+\.\d\d", lines[-3])
    assert re.fullmatch(r"run: final -?\d+\.\d\d \+- \d+\.\d\d, best -?\d+\.\d\d \+- \d+\.\d\d over 2 seeds "
                        r"\(mean \+- std, ddof=1\)", lines[-1])
    for seed in (0, 1):  # the resume rewrote the copies from its checkpoint on, as the JSONL
        _csv_equals_jsonl(out / f"seed_{seed}")
    if "tensorboard" in sinks:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(out / "tensorboard" / "seed_1"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/critic_loss")] == [10, 20, 30, 40]
        assert [e.step for e in acc.Scalars("eval/score_mean")] == [20, 40]


def test_arms_print_their_directories_and_a_summary_each(point_store, tmp_path, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "0")
    res = runner.invoke(app, ["train", "td3bc", "--arm", f"a={point_store}", "--arm", f"b={point_store}",
                              "--out", str(tmp_path), "--steps", "20", *ARGS])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"run directories: {tmp_path / 'a'}, {tmp_path / 'b'}"
    assert re.search(r"score a -?\d+\.\d\d, b -?\d+\.\d\d$", res.output, re.M), res.output
    assert len(re.findall(r"^[ab]: final .* over 2 seeds \(mean \+- std, ddof=1\)$", res.output, re.M)) == 2


def test_final_lines_round_and_use_the_sample_std():
    result = {"seeds": {"0": {"final_score": 44.676, "best_score": 45.1234},
                        "1": {"final_score": 45.0, "best_score": 45.5}}}
    assert final_lines("", result, Path("r")) == [
        "seed 0: final 44.68, best 45.12", "seed 1: final 45.00, best 45.50",
        "run: final 44.84 +- 0.23, best 45.31 +- 0.27 over 2 seeds (mean +- std, ddof=1)"]
    one = {"seeds": {"3": {"final_score": None, "best_score": None}}}
    assert final_lines("gta", one, Path("r/gta")) == [
        "arm gta (r/gta):", "seed 3: final n/a, best n/a", "gta: no evaluation (--eval-episodes 0)"]


def test_a_missing_sink_package_is_one_line_before_anything_runs(point_store, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    res = runner.invoke(app, ["train", "td3bc", "--data", str(point_store), "--out", str(tmp_path / "r"),
                              "--log-to", "wandb", *ARGS])
    assert res.exit_code == 1 and res.output.strip() == "error: --log-to wandb needs the wandb package: pip install " \
        "'gta-rl[wandb]'"
    assert not (tmp_path / "r").exists()


def test_train_api_refuses_an_unknown_sink(point_store, tmp_path):
    from gta_rl.training import RunConfig, RunError, train

    with pytest.raises(RunError, match="unknown sink"):
        train(RunConfig("td3bc", (str(point_store),), (0,), steps=2, log_to=("nope",)), tmp_path / "r")
