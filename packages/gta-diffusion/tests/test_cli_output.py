"""What `gta-diffusion train/augment` show off a terminal and where --log-to copies the metrics; --threads."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from gta_diffusion.cli import app
from gta_diffusion.errors import DiffusionError
from gta_diffusion.threads import DEFAULT_CPU_THREADS, cpu_threads

runner = CliRunner()
SMALL = ["--batch-size", "16", "--warmup-steps", "2", "--log-every", "2", "--checkpoint-every", "4",
         "--device", "cpu"]
GTA = ["--network", "fast-mixer-small", "--horizon", "4", *SMALL]


def _csv_equals_jsonl(run):
    with (run / "train.csv").open(newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{k: float(v) for k, v in r.items()} for r in records]
    return rows


@pytest.mark.parametrize("model", ["gta", "synther"])
def test_train_prints_lines_and_copies_metrics_to_csv(tmp_path, toy_store, model, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "0")
    run = tmp_path / "run"
    flags = GTA if model == "gta" else ["--network", "synther-small", *SMALL]
    res = runner.invoke(app, ["train", "--model", model, "--data", str(toy_store.path), "--out", str(run),
                              "--steps", "6", "--stop-after", "4", "--log-to", "csv", *flags])
    assert res.exit_code == 0, res.output
    assert re.search(r"^train: 3/6 \(50%\), [\d.]+ steps/s, .*, loss \d", res.output, re.M), res.output
    assert "(1 thread(s))" in res.output
    assert json.loads((run / "config.json").read_text())["train"]["log_to"] == ["csv"]
    (run / "metrics.jsonl").open("a").write(json.dumps({"step": 5, "loss": 9.0}) + "\n")  # lost with a kill
    with (run / "train.csv").open("a") as f:
        f.write("5," + ",".join(["9.0"] * (len(next(csv.reader((run / "train.csv").open()))) - 1)) + "\n")
    res = runner.invoke(app, ["train", "--model", model, "--out", str(run), "--steps", "6", "--device", "cpu"])
    assert res.exit_code == 0 and "resuming at step 4" in res.output, res.output
    assert [r["step"] for r in _csv_equals_jsonl(run)] == [2, 4, 6]


def test_log_to_given_on_resume_is_applied_and_said(tmp_path, toy_store):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(run), "--steps", "4",
                              "--stop-after", "2", *GTA])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--out", str(run), "--steps", "4", "--log-to", "csv", "--device", "cpu"])
    assert res.exit_code == 0 and "log to: jsonl only -> csv" in res.output, res.output
    assert [r["step"] for r in csv.DictReader((run / "train.csv").open())] == ["4"]


def test_unknown_sink_is_one_line_before_anything_runs(tmp_path, toy_store):
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "r"), "--steps", "2",
                              "--log-to", "csv,mlflow", *GTA])
    assert res.exit_code == 1 and "unknown sink 'mlflow'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["gta", "s4rl"])
def test_augment_prints_lines_off_a_terminal(tmp_path, toy_store, method, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "0")
    args = ["augment", "--method", method, "--data", str(toy_store.path), "--out", str(tmp_path / "aug.zarr"),
            "--num-transitions", "40"]
    if method == "gta":
        run = tmp_path / "run"
        res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(run), "--steps", "2", *GTA])
        assert res.exit_code == 0, res.output
        args += ["--model", str(run), "--batch-size", "4", "--num-steps", "2", "--device", "cpu", "--threads", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    unit = "windows" if method == "gta" else "transitions"
    assert re.search(rf"^{method if method == 's4rl' else 'augment'}: \d+/\d+ \(100%\), [\d.]+ {unit}/s", res.output,
                     re.M), res.output


def test_threads_rule(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = torch.device("cpu")
    assert cpu_threads(None, cpu) == DEFAULT_CPU_THREADS == 1 and cpu_threads(3, cpu) == 3
    assert cpu_threads(None, torch.device("cuda")) is None and cpu_threads(3, torch.device("cuda")) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(None, cpu) is None  # the user's own setting stays
    with pytest.raises(DiffusionError, match="--threads must be >= 1"):
        cpu_threads(0, cpu)
