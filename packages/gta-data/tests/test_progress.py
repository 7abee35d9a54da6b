"""Progress off a terminal: periodic plain lines with the count, the rate and the text; nothing when disabled."""

from __future__ import annotations

import re

from gta_data.progress import format_duration, progress


def test_plain_lines_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "0")
    with progress("train", total=4, terminal=False) as bar:
        bar.begin(1)  # a resumed run: rates count from here
        bar.update(info="loss 0.5")  # a text alone waits for the next count
        bar.update(2)
        bar.update(advance=2, info="loss 0.25")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the line of step 4 is not repeated at the end
    assert re.fullmatch(r"train: 2/4 \(50%\), [\d.]+ steps/s, 0s elapsed, \d+s left, loss 0\.5", lines[0])
    assert re.fullmatch(r"train: 4/4 \(100%\), [\d.]+ steps/s, 0s elapsed, \d+s left, loss 0\.25", lines[1])


def test_lines_wait_for_the_interval_and_the_end_is_always_shown(capsys, monkeypatch):
    monkeypatch.setenv("GTA_PROGRESS_SECONDS", "3600")
    with progress("augment", unit="windows", terminal=False) as bar:
        bar.update(total=10)
        for _ in range(10):
            bar.advance(1)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"augment: 10/10 \(100%\), [\d.]+ windows/s, 0s elapsed", lines[0])


def test_disabled_prints_nothing(capsys):
    with progress("train", total=3, enabled=False, terminal=False) as bar:
        bar.update(3)
    assert capsys.readouterr().out == ""


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 61, 3600 + 120)] == ["4s", "1m01s", "1h02m"]
