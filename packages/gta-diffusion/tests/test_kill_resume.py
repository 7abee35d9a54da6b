"""A real SIGKILL during `gta-diffusion train`, then a resume: the final weights equal an uninterrupted run."""

from __future__ import annotations

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
