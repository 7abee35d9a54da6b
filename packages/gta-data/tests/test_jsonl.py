"""The resumable JSONL metric logs (gta_data.jsonl)."""

from __future__ import annotations

import json

import pytest

from gta_data.jsonl import JsonlError, JsonlLog, read_jsonl


def test_append_read_and_rewind(tmp_path):
    log = JsonlLog(tmp_path / "metrics.jsonl")
    assert log.read() == [] and read_jsonl(tmp_path / "none.jsonl") == []
    log.truncate_after(3)  # nothing to rewind yet: no file is made
    assert not log.path.exists()
    log.append({"step": 1, "loss": 0.5})
    log.extend([{"step": 2, "kind": "eval", "score": 1.0}, {"step": 2, "kind": "train"}, {"step": 3, "x": [1, 2]}])
    assert [r["step"] for r in log.read()] == [1, 2, 2, 3]
    before = log.path.read_text().splitlines()
    log.truncate_after(2, drop=lambda r: r.get("kind") == "eval")
    assert log.path.read_text().splitlines() == [before[0], before[2]]  # kept lines are copied as written
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))
    log.append({"step": 3})
    assert [r["step"] for r in log.read()] == [1, 2, 3]


def test_torn_last_line_is_skipped_and_dropped_but_other_damage_is_an_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')  # killed mid-append
    assert read_jsonl(path) == [{"step": 1}]
    JsonlLog(path).truncate_after(5)
    assert path.read_text() == '{"step": 1}\n'
    path.write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(JsonlError, match="line 1: not JSON"):
        read_jsonl(path)
    path.write_text('[1, 2]\n{"step": 2}\n')
    with pytest.raises(JsonlError, match="not a JSON object"):
        read_jsonl(path)
    path.write_text('{"loss": 1}\n')
    with pytest.raises(JsonlError, match="no integer 'step'"):
        JsonlLog(path).truncate_after(1)
