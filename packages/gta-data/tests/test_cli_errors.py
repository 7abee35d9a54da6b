"""One-line errors on the command line (gta_data.cli_errors) and lazy package attributes (gta_data.lazy)."""

from __future__ import annotations

import sys
import types

import pytest
import typer
from typer.testing import CliRunner

from gta_data.cli_errors import debug_requested, first_line, one_line_errors
from gta_data.lazy import lazy_attributes


class KnownError(ValueError):
    pass


def _app(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def run(debug: bool = False) -> None:
        with one_line_errors((KnownError, FileNotFoundError), debug):
            raise exc

    return app


def test_known_errors_become_one_line_and_exit_1(monkeypatch):
    monkeypatch.delenv("GTA_DEBUG", raising=False)
    result = CliRunner().invoke(_app(KnownError("bad store\nsecond line")), [])
    assert result.exit_code == 1 and "error: bad store" in result.output and "second line" not in result.output
    result = CliRunner().invoke(_app(KnownError("x")), ["--debug"])
    assert result.exit_code == 1 and isinstance(result.exception, KnownError)  # the traceback, under --debug
    result = CliRunner().invoke(_app(RuntimeError("a bug")), [])
    assert isinstance(result.exception, RuntimeError)  # unknown errors keep their traceback
    monkeypatch.setenv("GTA_DEBUG", "1")
    assert isinstance(CliRunner().invoke(_app(KnownError("x")), []).exception, KnownError)
    monkeypatch.setenv("GTA_DEBUG", "0")
    assert not debug_requested()
    assert first_line(KnownError("")) == "KnownError"


def test_lazy_attributes_load_on_first_use(monkeypatch):
    package = types.ModuleType("toy_pkg")
    package.__path__ = []
    sub = types.ModuleType("toy_pkg.things")
    sub.thing = object()
    monkeypatch.setitem(sys.modules, "toy_pkg", package)
    monkeypatch.setitem(sys.modules, "toy_pkg.things", sub)
    package.__getattr__, package.__dir__ = lazy_attributes("toy_pkg", {"thing": "things"})
    assert "thing" in dir(package) and "thing" not in vars(package)
    assert package.thing is sub.thing and vars(package)["thing"] is sub.thing  # cached after the first use
    with pytest.raises(AttributeError, match="has no attribute 'other'"):
        _ = package.other
