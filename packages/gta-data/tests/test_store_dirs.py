"""The writer lifecycle every store format shares (gta_data.store_dirs.AtomicStoreWriter), on a minimal format
and on the trajectory store's writer."""

import logging
import os
import socket

import numpy as np
import pytest
import zarr

from gta_data import StoreError, StoreWriter, TrajectoryStore
from gta_data.store_dirs import AtomicStoreWriter, read_attrs


class ToyError(ValueError):
    pass


class ToyWriter(AtomicStoreWriter):
    """A format of one int64 array ``values``: the least a subclass has to say."""

    format_name = "toy-store"
    error = ToyError
    kind = "toy store"
    noun = "toy store"
    log = logging.getLogger("test_store_dirs")

    def __init__(self, path, *, overwrite=False):
        self._values: list[int] = []
        self._begin(path, {"format": self.format_name}, overwrite=overwrite)

    def add(self, value: int) -> None:
        self._check_open()
        self._values.append(value)

    def _finish(self):
        if not self._values:
            raise ToyError("refusing to write a toy store with no values")
        self._group.create_array("values", shape=(len(self._values),), dtype="int64")[:] = self._values
        return {"format": self.format_name, "count": len(self._values)}

    def _open(self):
        return zarr.open_group(store=str(self.path), mode="r")


def test_commit_writes_complete_last_and_renames(tmp_path):
    writer = ToyWriter(tmp_path / "t.zarr")
    (tmp,) = tmp_path.iterdir()
    assert tmp.name.startswith(".t.zarr.tmp-") and not (tmp_path / "t.zarr").exists()
    attrs = read_attrs(tmp)
    assert attrs["complete"] is False
    assert attrs["writer"] == {"host": socket.gethostname(), "pid": os.getpid()}
    writer.add(3)
    writer.add(5)
    group = writer.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["t.zarr"]
    assert dict(group.attrs) == {"format": "toy-store", "count": 2, "complete": True}
    np.testing.assert_array_equal(group["values"][:], [3, 5])
    assert writer.closed


def test_exception_inside_with_leaves_no_store_and_no_temporary(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), ToyWriter(tmp_path / "t.zarr") as writer:
        writer.add(1)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert writer.closed
    with pytest.raises(ToyError, match=r"^the writer of .*t\.zarr is closed \(already aborted\)$"):
        writer.add(2)


def test_refused_commit_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(ToyError, match="no values"), ToyWriter(tmp_path / "t.zarr"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_refused_commit_outside_with_keeps_the_writer_open(tmp_path):
    writer = ToyWriter(tmp_path / "t.zarr")
    with pytest.raises(ToyError, match="no values"):
        writer.commit()
    writer.add(7)
    np.testing.assert_array_equal(writer.commit()["values"][:], [7])


def test_commit_twice_is_a_one_line_error(tmp_path):
    with ToyWriter(tmp_path / "t.zarr") as writer:
        writer.add(1)
    with pytest.raises(ToyError) as info:
        writer.commit()
    assert str(info.value) == f"the writer of {tmp_path / 't.zarr'} is closed (already committed)"
    writer.abort()  # aborting a committed writer removes nothing
    assert [p.name for p in tmp_path.iterdir()] == ["t.zarr"]


def test_commit_after_abort_is_refused(tmp_path):
    writer = ToyWriter(tmp_path / "t.zarr")
    writer.add(1)
    writer.abort()
    with pytest.raises(ToyError, match="already aborted"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_commit_refused_at_the_rename_leaves_no_temporary(tmp_path):
    writer = ToyWriter(tmp_path / "t.zarr")
    writer.add(1)
    (tmp_path / "t.zarr").mkdir()  # appeared while writing; overwrite was not given
    (tmp_path / "t.zarr" / "notes.txt").write_text("keep")
    with pytest.raises(ToyError, match="already exists"):
        writer.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["t.zarr"]
    assert (tmp_path / "t.zarr" / "notes.txt").read_text() == "keep"
    with pytest.raises(ToyError, match="already aborted"):
        writer.commit()


def test_trajectory_writer_shares_the_lifecycle(tmp_path, transitions):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError), StoreWriter(path, env_id="E", obs_dim=3, act_dim=2) as writer:
        writer.add_episode(transitions.slice(0, 10))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with StoreWriter(path, env_id="E", obs_dim=3, act_dim=2) as writer:
        writer.add_episode(transitions.slice(0, 10))
    assert TrajectoryStore.open(path).num_transitions == 10
    with pytest.raises(StoreError, match=r"closed \(already committed\)"):
        writer.commit()
    with pytest.raises(StoreError, match=r"closed \(already committed\)"):
        writer.add_episode(transitions.slice(0, 10))
