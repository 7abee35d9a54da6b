import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from gta_data import (
    StoreError,
    StoreWriter,
    TrajectoryStore,
    Transitions,
    append_episodes,
    gather_windows,
    window_starts,
    write_episodes,
    write_store,
)
from gta_data.store import FORMAT_VERSION


def _write(tmp_path, transitions, ends=(30, 70, 100), name="s.zarr", **kw):
    return write_store(tmp_path / name, transitions, np.array(ends), env_id="HalfCheetah-v5", **kw)


def test_round_trip_arrays(tmp_path, transitions):
    store = _write(tmp_path, transitions, episode_meta={"seed": np.array([1, 2, 3])},
                   provenance={"note": "test"}, ref_min_score=-1.0, ref_max_score=2.0)
    assert store.num_transitions == 100 and store.num_episodes == 3
    assert (store.obs_dim, store.act_dim) == (3, 2)
    loaded = store.load()
    for name, arr in transitions.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), arr)
        assert getattr(loaded, name).dtype == arr.dtype
    np.testing.assert_array_equal(store.episode_ends, [30, 70, 100])
    np.testing.assert_array_equal(store.episode_starts, [0, 30, 70])
    np.testing.assert_array_equal(store.meta("seed"), [1, 2, 3])
    assert store.ref_scores == (-1.0, 2.0)
    assert store.provenance["note"] == "test" and store.provenance["producer"].startswith("gta-data")
    episodes = list(store.episodes())
    assert [len(e) for e in episodes] == [30, 40, 30]
    np.testing.assert_array_equal(episodes[1].rewards, transitions.rewards[30:70])
    np.testing.assert_allclose(store.episode_returns(),
                               [transitions.rewards[a:b].astype(np.float64).sum() for a, b in
                                [(0, 30), (30, 70), (70, 100)]], rtol=1e-6)


def test_extras_round_trip_and_episode_writer(tmp_path, make_transitions):
    parts = []
    with StoreWriter(tmp_path / "w.zarr", env_id="Hopper-v5", obs_dim=3, act_dim=2, flush_rows=16) as writer:
        for i, n in enumerate([10, 25, 7]):
            ep = make_transitions(n, seed=i)
            ep.extras["timesteps"] = np.arange(n)
            writer.add_episode(ep, source_start=i * 100)
            parts.append(ep)
    store = TrajectoryStore.open(tmp_path / "w.zarr")
    assert store.extra_keys() == {"timesteps"} and store.meta_keys() == {"source_start"}
    loaded = store.load()
    np.testing.assert_array_equal(loaded.extras["timesteps"], np.concatenate([np.arange(n) for n in [10, 25, 7]]))
    np.testing.assert_array_equal(loaded.observations, Transitions.concatenate(parts).observations)
    np.testing.assert_array_equal(store.meta("source_start"), [0, 100, 200])


def test_provenance_known_only_after_writing(tmp_path, make_transitions):
    writer = StoreWriter(tmp_path / "p.zarr", env_id="Hopper-v5", obs_dim=3, act_dim=2, provenance={"method": "X"})
    with writer:
        writer.add_episode(make_transitions(5, seed=0))
        assert not (tmp_path / "p.zarr").exists()
        writer.update_provenance(fraction_clipped=0.25)
    prov = TrajectoryStore.open(tmp_path / "p.zarr").provenance
    assert prov["method"] == "X" and prov["fraction_clipped"] == 0.25
    with pytest.raises(StoreError):
        writer.update_provenance(late=True)  # the store is committed


def test_write_episodes_and_append(tmp_path, make_transitions):
    eps = [make_transitions(n, seed=n) for n in (5, 8)]
    write_episodes(tmp_path / "a.zarr", eps, env_id="Hopper-v5", obs_dim=3, act_dim=2)
    store = append_episodes(tmp_path / "a.zarr", [make_transitions(4, seed=99)])
    assert store.num_transitions == 17 and list(store.episode_ends) == [5, 13, 17]
    np.testing.assert_array_equal(store.load().actions[13:], make_transitions(4, seed=99).actions)
    assert "appended" in store.provenance
    # No temporary or set-aside directories are left next to the store.
    assert sorted(os.listdir(tmp_path)) == ["a.zarr"]


def test_append_keeps_episode_meta_consistent(tmp_path, transitions, make_transitions):
    _write(tmp_path, transitions, episode_meta={"seed": np.array([1, 2, 3])})
    with pytest.raises(StoreError, match="episode meta"):
        append_episodes(tmp_path / "s.zarr", [make_transitions(4)])
    store = append_episodes(tmp_path / "s.zarr", [make_transitions(4)], seed=[7])
    np.testing.assert_array_equal(store.meta("seed"), [1, 2, 3, 7])


def test_windows_stay_inside_episodes(tmp_path, transitions):
    store = _write(tmp_path, transitions)
    starts = window_starts(store.episode_ends, 31)
    # Episodes of 30, 40, 30 transitions: only the 40-step one has windows of 31 (10 of them).
    np.testing.assert_array_equal(starts, np.arange(30, 40))
    starts = window_starts(store.episode_ends, 5)
    assert len(starts) == (30 - 4) + (40 - 4) + (30 - 4)
    ep = np.searchsorted(store.episode_ends, starts, side="right")
    ep_last = np.searchsorted(store.episode_ends, starts + 4, side="right")
    np.testing.assert_array_equal(ep, ep_last)
    data = store.load()
    batch = gather_windows(data, starts[[0, 40]], 5)
    assert batch.observations.shape == (2, 6, 3) and batch.actions.shape == (2, 5, 2)
    s = starts[40]
    np.testing.assert_array_equal(batch.observations[1, :5], data.observations[s:s + 5])
    np.testing.assert_array_equal(batch.observations[1, 5], data.next_observations[s + 4])
    np.testing.assert_array_equal(batch.rewards[1], data.rewards[s:s + 5])
    # H = 1: every transition is a window.
    assert len(window_starts(store.episode_ends, 1)) == 100
    with pytest.raises(StoreError, match="horizon"):
        window_starts(store.episode_ends, 0)


def test_windows_are_views_not_copies():
    # The index of all windows is one int64 per window, not H rows per window.
    ends = np.array([1000, 2500])
    starts = window_starts(ends, 31)
    assert starts.nbytes == 8 * len(starts)


# ---- atomicity --------------------------------------------------------------------------------------


def test_exception_during_write_leaves_nothing(tmp_path, transitions):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "x.zarr", env_id="E", obs_dim=3, act_dim=2, flush_rows=8) as w:
            w.add_episode(transitions.slice(0, 30))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_killed_writer_never_leaves_a_complete_store(tmp_path):
    script = textwrap.dedent(f"""
        import os, numpy as np
        from gta_data import StoreWriter, Transitions
        n = 50
        ep = Transitions(np.zeros((n, 3)), np.zeros((n, 2)), np.zeros(n), np.zeros((n, 3)),
                         np.zeros(n, bool), np.zeros(n, bool))
        w = StoreWriter({str(tmp_path / 'k.zarr')!r}, env_id="E", obs_dim=3, act_dim=2, flush_rows=10)
        for _ in range(5):
            w.add_episode(ep)
        os._exit(9)  # killed mid-write: no commit, no cleanup
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert not (tmp_path / "k.zarr").exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert leftovers and all(p.name.startswith(".k.zarr.tmp-") for p in leftovers)
    with pytest.raises(StoreError, match="incomplete"):
        TrajectoryStore.open(leftovers[0])


def test_overwrite_is_explicit_and_atomic(tmp_path, transitions, make_transitions):
    _write(tmp_path, transitions)
    with pytest.raises(StoreError, match="already exists"):
        _write(tmp_path, transitions)
    other = make_transitions(100, seed=5)
    store = _write(tmp_path, other, overwrite=True)
    np.testing.assert_array_equal(store.load().observations, other.observations)
    assert os.listdir(tmp_path) == ["s.zarr"]
    # overwrite replaces a store (or an empty folder), never another folder or file.
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for target in (folder, afile):
        with pytest.raises(StoreError, match="is not a trajectory store: overwrite replaces stores only"):
            write_store(target, transitions, np.array([len(transitions.rewards)]), env_id="Toy-v0", overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine" and afile.read_text() == "mine"
    (tmp_path / "empty").mkdir()
    write_store(tmp_path / "empty", transitions, np.array([len(transitions.rewards)]), env_id="Toy-v0", overwrite=True)


# ---- validation: every malformed store fails with a one-line error naming the problem -------------


def _attrs(path: Path) -> dict:
    meta = json.loads((path / "zarr.json").read_text())
    return meta["attributes"]


def _set_attr(path: Path, **changes):
    group = zarr.open_group(store=str(path), mode="r+")
    attrs = dict(group.attrs)
    for k, v in changes.items():
        if v is None:
            attrs.pop(k, None)
        else:
            attrs[k] = v
    group.attrs.put(attrs)


def _expect(path, pattern):
    with pytest.raises(StoreError, match=pattern) as info:
        TrajectoryStore.open(path).validate()
    assert "\n" not in str(info.value)


def test_missing_and_not_a_store(tmp_path):
    _expect(tmp_path / "nothing.zarr", "no store at")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("x")
    _expect(tmp_path / "plain", "not a Zarr group")
    zarr.open_group(store=str(tmp_path / "g.zarr"), mode="w")
    _expect(tmp_path / "g.zarr", "not a GTA trajectory store")


def test_wrong_version_and_incomplete(tmp_path, transitions):
    path = _write(tmp_path, transitions).path
    _set_attr(path, format_version=FORMAT_VERSION + 1)
    _expect(path, "format version 2")
    _set_attr(path, format_version=FORMAT_VERSION, complete=False)
    _expect(path, "incomplete")
    _set_attr(path, complete=True, env_id=None)
    _expect(path, "lacks the attribute 'env_id'")


def test_lengths_disagree(tmp_path, transitions):
    path = _write(tmp_path, transitions).path
    group = zarr.open_group(store=str(path), mode="r+")
    group["data/actions"].resize((99, 2))
    _expect(path, r"data/actions has shape .* \(lengths disagree\)")


def test_missing_array_and_wrong_dtype(tmp_path, transitions):
    path = _write(tmp_path, transitions).path
    group = zarr.open_group(store=str(path), mode="r+")
    del group["data/rewards"]
    _expect(path, "missing the array data/rewards")
    group.create_array("data/rewards", shape=(100,), dtype="float64")
    _expect(path, "data/rewards has dtype float64")


@pytest.mark.parametrize(
    "ends, pattern",
    [
        ([30, 70, 120], "out of range"),
        ([30, 20, 100], "not strictly increasing"),
        ([0, 70, 100], "not strictly increasing"),
    ],
)
def test_bad_episode_ends(tmp_path, transitions, ends, pattern):
    path = _write(tmp_path, transitions).path
    group = zarr.open_group(store=str(path), mode="r+")
    group["meta/episode_ends"][:] = np.array(ends)
    _expect(path, pattern)


def test_episode_count_mismatch(tmp_path, transitions):
    path = _write(tmp_path, transitions).path
    _set_attr(path, num_episodes=4)
    _expect(path, "num_episodes is 4")


def test_nan_in_data(tmp_path, transitions):
    transitions.rewards[5] = np.nan
    with pytest.raises(StoreError):
        # Writing NaN is allowed by the writer only if values are not checked: the reader must refuse it.
        path = _write(tmp_path, transitions).path
        TrajectoryStore.open(path).load()
    _expect(tmp_path / "s.zarr", "data/rewards contains NaN")


def test_terminal_inside_episode(tmp_path, transitions):
    transitions.terminals[10] = True
    path = _write(tmp_path, transitions).path
    _expect(path, "terminal at row 10")


def test_writer_rejects_bad_input(tmp_path, transitions):
    with pytest.raises(StoreError, match="does not exist"):
        StoreWriter(tmp_path / "no" / "x.zarr", env_id="E", obs_dim=3, act_dim=2)
    with pytest.raises(StoreError, match="obs_dim 3"):
        with StoreWriter(tmp_path / "x.zarr", env_id="E", obs_dim=4, act_dim=2) as w:
            w.add_episode(transitions)
    with pytest.raises(StoreError, match="no transitions"):
        with StoreWriter(tmp_path / "x.zarr", env_id="E", obs_dim=3, act_dim=2):
            pass
    with pytest.raises(StoreError, match="out of range"):
        _write(tmp_path, transitions, ends=(30, 200))
    with pytest.raises(StoreError, match="rows"):
        Transitions(np.zeros((3, 2)), np.zeros((2, 1)), np.zeros(3), np.zeros((3, 2)), np.zeros(3), np.zeros(3))
    assert os.listdir(tmp_path) == []


def test_bulk_add_transitions_with_one_step_segments(tmp_path, make_transitions):
    n = 5000
    data = make_transitions(n, seed=2)
    with StoreWriter(tmp_path / "b.zarr", env_id="E", obs_dim=3, act_dim=2, flush_rows=1024) as w:
        w.add_transitions(data.slice(0, 3000), np.arange(1, 3001), seed=np.arange(3000))
        w.add_episode(data.slice(3000, 3500), seed=-1)
        w.add_transitions(data.slice(3500, n), np.array([700, 1500]), seed=np.array([7, 8]))
    store = TrajectoryStore.open(tmp_path / "b.zarr")
    assert store.num_episodes == 3003
    np.testing.assert_array_equal(store.episode_ends[:3], [1, 2, 3])
    np.testing.assert_array_equal(store.episode_ends[-3:], [3500, 4200, 5000])
    np.testing.assert_array_equal(store.meta("seed")[-4:], [2999, -1, 7, 8])
    np.testing.assert_array_equal(store.load().actions, data.actions)
    with pytest.raises(StoreError, match="one entry per episode"):
        with StoreWriter(tmp_path / "c.zarr", env_id="E", obs_dim=3, act_dim=2) as w:
            w.add_transitions(data.slice(0, 10), np.array([5, 10]), seed=np.arange(3))
    assert not (tmp_path / "c.zarr").exists()


def test_damaged_copies_are_one_line_errors_not_zeros(tmp_path, transitions):
    import shutil

    store = _write(tmp_path, transitions)
    assert store.attrs["every_chunk_written"] is True
    chunks = sorted(p for p in (store.path / "data" / "terminals").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunks  # all-False terminals still have their chunk files (Zarr skips fill-value chunks by default)

    missing = tmp_path / "missing.zarr"
    shutil.copytree(store.path, missing)
    shutil.rmtree(missing / "data" / "observations" / "c")
    with pytest.raises(StoreError, match="data/observations lacks .* chunk files"):
        TrajectoryStore.open(missing).validate()

    truncated = tmp_path / "truncated.zarr"
    shutil.copytree(store.path, truncated)
    chunk = next(p for p in (truncated / "data" / "actions").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:7])
    with pytest.raises(StoreError, match="cannot read data/actions"):
        TrajectoryStore.open(truncated).load()

    bad_meta = tmp_path / "badmeta.zarr"
    shutil.copytree(store.path, bad_meta)
    (bad_meta / "data" / "rewards" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="badmeta.zarr"):
        TrajectoryStore.open(bad_meta)


def test_every_array_has_dimension_names_and_xarray_opens_the_store(tmp_path, transitions):
    data = Transitions(**{n: getattr(transitions, n) for n in ("observations", "actions", "rewards",
                                                               "next_observations", "terminals", "timeouts")},
                       extras={"timesteps": np.arange(100), "pair": np.zeros((100, 2), np.float32)})
    store = write_store(tmp_path / "s.zarr", data, np.array([30, 70, 100]), env_id="HalfCheetah-v5",
                        episode_meta={"seed": np.arange(3), "condition": np.zeros((3, 4))})
    group = zarr.open_group(str(store.path), mode="r")
    assert group["data/observations"].metadata.dimension_names == ("time", "obs_dim")
    assert group["data/actions"].metadata.dimension_names == ("time", "act_dim")
    assert group["data/pair"].metadata.dimension_names == ("time", "pair_dim1")
    assert group["meta/episode_ends"].metadata.dimension_names == ("episode",)
    assert group["meta/condition"].metadata.dimension_names == ("episode", "condition_dim1")
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(store.path, group="data", consolidated=False)
    assert dict(ds.sizes) == {"time": 100, "obs_dim": 3, "act_dim": 2, "pair_dim1": 2}
    np.testing.assert_array_equal(ds["next_observations"].values, transitions.next_observations)
    meta = xr.open_zarr(store.path, group="meta", consolidated=False)
    np.testing.assert_array_equal(meta["episode_ends"].values, [30, 70, 100])
    TrajectoryStore.open(store.path).validate()


def test_a_store_written_before_dimension_names_still_reads(tmp_path, transitions):
    store = _write(tmp_path, transitions)
    for meta in store.path.rglob("zarr.json"):  # as written by gta-data before arrays had dimension names
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array":
            doc.pop("dimension_names", None)
            meta.write_text(json.dumps(doc))
    old = TrajectoryStore.open(store.path)
    assert zarr.open_array(str(store.path / "data" / "observations"), mode="r").metadata.dimension_names is None
    np.testing.assert_array_equal(old.load().observations, transitions.observations)


def test_a_sigterm_leaves_a_temporary_store_that_the_next_write_removes(tmp_path, transitions, caplog):
    import signal

    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from gta_data import StoreWriter, Transitions
        n = 50
        ep = Transitions(np.zeros((n, 3)), np.zeros((n, 2)), np.zeros(n), np.zeros((n, 3)),
                         np.zeros(n, bool), np.zeros(n, bool))
        w = StoreWriter({str(tmp_path / 'k.zarr')!r}, env_id="E", obs_dim=3, act_dim=2, flush_rows=10)
        w.add_episode(ep)
        print("writing", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    stale = [p for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].name.startswith(".k.zarr.tmp-")
    # Kept: a temporary store of a live writer (this process), and a folder of that name that is not a store.
    live = tmp_path / ".k.zarr.tmp-0123abcd"
    StoreWriter(tmp_path / "other.zarr", env_id="E", obs_dim=3, act_dim=2)._tmp.rename(live)
    (tmp_path / ".k.zarr.tmp-feedbeef").mkdir()
    with caplog.at_level("WARNING"):
        store = _write(tmp_path, transitions, name="k.zarr")
    assert f"removed {stale[0]}: an incomplete store left by an interrupted write" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".k.zarr.tmp-0123abcd", ".k.zarr.tmp-feedbeef", "k.zarr"]
    assert "writer" not in store.attrs
