"""tools/check_functions.py on temporary files (the repository itself is checked by running the tool)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("check_functions", ROOT / "tools" / "check_functions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lists_long_functions_methods_and_nested_ones(tmp_path, capsys):
    tool = _tool()
    body = "".join(f"    x{i} = {i}\n" for i in range(8))
    nested = "".join(f"        x{i} = {i}\n" for i in range(8))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import functools\n\n"  # lines 1-2
        "def short():\n    return 1\n\n"  # lines 3-5
        "@functools.cache\ndef long_one():\n" + body  # lines 6-15
        + "    def inner():\n" + nested + "    return inner\n\n"  # lines 16-25: long_one is lines 6-25
        + "class K:\n    async def method(self):\n" + nested  # lines 27-36: method is lines 28-36
    )
    found = tool.long_functions([tmp_path], limit=8)
    # Decorators count (long_one starts at line 6); methods and nested functions are listed with their owners.
    assert [(line, name, length) for _, line, name, length in found] == [
        (6, "long_one", 20), (16, "long_one.inner", 9), (28, "K.method", 9)]
    assert [name for _, _, name, _ in tool.long_functions([tmp_path / "pkg" / "a.py"], limit=9)] == ["long_one"]
    assert tool.long_functions([tmp_path / "pkg" / "a.py"], limit=20) == []
    assert tool.main([str(tmp_path), "--limit", "8"]) == 1
    out = capsys.readouterr().out
    assert "a.py:6: long_one is 20 lines" in out and "3 function(s) over 8 lines" in out
    assert tool.main([str(tmp_path), "--limit", "20"]) == 0
    assert "ok: no function over 20 lines" in capsys.readouterr().out
