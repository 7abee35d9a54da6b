"""A real SIGKILL during `gta-diffusion train`, then a resume: the final weights equal an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from gta_diffusion.checkpoint import latest_checkpoint
from gta_diffusion.cli import app

ARGS = ["--network", "fast-mixer-small", "--steps", "400", "--batch-size", "16", "--horizon", "4", "--warmup-steps", "5",
        "--log-every", "25", "--checkpoint-every", "20", "--device", "cpu", "--seed", "3"]


def test_sigkill_then_resume_is_exact(tmp_path, toy_store):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gta_diffusion.cli", "train", "--data", str(toy_store.path),
                             "--out", str(killed), *ARGS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        pointer = killed / "checkpoints" / "latest"
        if pointer.exists() and int(pointer.read_text().strip().split("-")[1]) >= 40:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-2000:]!r}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(killed) is not None
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--out", str(killed), *ARGS])
    assert res.exit_code == 0 and "resuming at step" in res.output, res.output
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "full"), *ARGS])
    assert res.exit_code == 0, res.output
    a = load_file(str(latest_checkpoint(killed) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "full") / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    ema_a = load_file(str(latest_checkpoint(killed) / "ema.safetensors"))
    ema_b = load_file(str(latest_checkpoint(tmp_path / "full") / "ema.safetensors"))
    assert all((ema_a[k] == ema_b[k]).all() for k in ema_a)
    assert latest_checkpoint(killed).name == "step-000000400"
    # A write cut by the kill may leave a temporary directory; the resume removes it.
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]


SYNTHER_ARGS = ["--model", "synther", "--network", "synther-small", "--steps", "300", "--batch-size", "16",
                "--log-every", "10", "--device", "cpu", "--seed", "2"]


@pytest.mark.parametrize("model_args, sig", [(ARGS, signal.SIGTERM), (SYNTHER_ARGS, signal.SIGINT)],
                         ids=["gta-sigterm", "synther-sigint"])
def test_signal_checkpoints_at_the_step_and_resumes_exactly(tmp_path, toy_store, model_args, sig):
    """SIGTERM / Ctrl-C: a checkpoint at the step the loop was in (no periodic checkpoint happens before it),
    exit code 128 + signal, and the resumed run continues from that step to the uninterrupted run's weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = [*model_args, "--checkpoint-every", "100000"]
    run = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "gta_diffusion.cli", "train", "--data", str(toy_store.path),
                             "--out", str(run), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:  # the loop is running
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"training ended before the signal: {proc.stderr.read()[-2000:]!r}")
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    stopped_at = int(out.split(f"interrupted by {sig.name} at step ")[1].split(":")[0])
    assert latest_checkpoint(run).name == f"step-{stopped_at:09d}"
    total = int(args[args.index("--steps") + 1])
    assert 20 <= stopped_at < total
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--out", str(run), *args])
    assert res.exit_code == 0 and f"resuming at step {stopped_at}" in res.output, res.output
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(tmp_path / "full"), *args])
    assert res.exit_code == 0, res.output
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(latest_checkpoint(run) / name))
        b = load_file(str(latest_checkpoint(tmp_path / "full") / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name


@pytest.mark.parametrize("model_args, other_preset", [
    (["--network", "fast-mixer-small", "--horizon", "4", "--batch-size", "16"], "fast-mixer"),
    (["--model", "synther", "--network", "synther-small", "--batch-size", "16"], "synther"),
], ids=["gta", "synther"])
def test_resume_with_other_options_applies_or_refuses(tmp_path, toy_store, model_args, other_preset):
    runner = CliRunner()
    run = tmp_path / "run"
    common = [*model_args, "--log-every", "2", "--checkpoint-every", "2", "--device", "cpu"]
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(run), "--steps", "4", *common])
    assert res.exit_code == 0, res.output
    # More steps (and another batch size) are applied from the saved step on, and said.
    res = runner.invoke(app, ["train", "--out", str(run), "--steps", "6", *common, "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert "changed on resume: steps: 4 -> 6" in res.output and "resuming at step 4" in res.output
    assert "changed on resume: batch size: 16 -> 8 from step 4 on" in res.output
    assert latest_checkpoint(run).name == "step-000000006"
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["steps"], train["batch_size"]) == (6, 8)
    # What changes the model, or steps that end before the saved step: one line, nothing changed.
    before = (run / "config.json").read_text()
    refusals = [(["--network", other_preset], "cannot change the network"),
                (["--steps", "5"], "already at step 6")]
    if "synther" not in model_args:
        refusals.append((["--penalty-in-rewards"], "cannot change what the model learns"))
    for extra, message in refusals:
        res = runner.invoke(app, ["train", "--out", str(run), *common, *extra])
        assert res.exit_code == 1 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert (run / "config.json").read_text() == before


def test_resume_of_the_other_model_kind_rewrites_nothing(tmp_path, toy_store):
    # `train --steps N` on a SynthER run without --model synther (or the reverse) is refused before its
    # config.json is rewritten with the new options.
    runner = CliRunner()
    synther, gta = tmp_path / "synther", tmp_path / "gta"
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(synther), *SYNTHER_ARGS[:4],
                              "--steps", "2", "--batch-size", "16", "--checkpoint-every", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--data", str(toy_store.path), "--out", str(gta), "--network",
                              "fast-mixer-small", "--horizon", "4", "--steps", "2", "--batch-size", "16",
                              "--checkpoint-every", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for run, model_args in ((synther, []), (gta, ["--model", "synther"])):
        before = (run / "config.json").read_text()
        res = runner.invoke(app, ["train", "--out", str(run), *model_args, "--steps", "500", "--device", "cpu"])
        assert res.exit_code == 1 and "model, not a" in res.output and len(res.output.strip().splitlines()) == 1, \
            res.output
        assert (run / "config.json").read_text() == before
