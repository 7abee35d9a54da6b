import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from gta_pixel.errors import PixelStoreError
from gta_pixel.pixelstore import (
    PixelStore,
    PixelStoreWriter,
    frame_rows,
    nstep_returns,
    stack_indices,
    write_pixel_store,
)

TASK = {"kind": "fake", "size": 8, "act_dim": 2, "state_dim": 3, "max_steps": 7, "action_repeat": 1,
        "terminate_above": None}


def test_round_trip(tmp_path, fake_dataset):
    data = fake_dataset()
    store = write_pixel_store(tmp_path / "p.zarr", **data, task=TASK, renderer={"fake": True},
                              provenance={"seed": 3})
    assert (store.num_steps, store.num_frames, store.num_episodes) == (13, 16, 3)
    assert (store.act_dim, store.state_dim, store.frame_stack, store.frame_shape) == (2, 3, 3, (3, 8, 8))
    assert store.task == TASK and store.renderer == {"fake": True}
    assert store.provenance["seed"] == 3 and store.provenance["producer"].startswith("gta-pixel")
    loaded = store.load()
    for name in ("frames", "actions", "rewards", "discounts", "terminals", "timeouts", "episode_ends", "states"):
        np.testing.assert_array_equal(getattr(loaded, name), data[name], err_msg=name)
    assert store.load(states=False).states is None
    np.testing.assert_allclose(store.episode_returns(), [data["rewards"][a:b].sum() for a, b in
                                                         ((0, 5), (5, 6), (6, 13))], rtol=1e-6)
    np.testing.assert_array_equal(store.frames(4, 7), data["frames"][4:7])
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert group["frames"].chunks == (128, 3, 8, 8)
    assert group.attrs["complete"] is True and "writer" not in group.attrs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_without_states_and_terminal(tmp_path, fake_dataset):
    data = fake_dataset(terminal_last=True)
    data["states"] = None
    store = write_pixel_store(tmp_path / "p.zarr", **data, task={"kind": "dmc", "domain": "walker", "task": "walk"})
    assert store.state_dim is None and store.load().states is None
    assert store.ref_scores == (0.0, 1000.0)
    assert store.load().terminals[-1] and store.load().discounts[-1] == 0


def test_writer_streams_episodes(tmp_path, fake_dataset):
    data = fake_dataset(lengths=(40, 30, 50), size=4)
    with PixelStoreWriter(tmp_path / "w.zarr", task=TASK, frame_shape=(3, 4, 4), act_dim=2, state_dim=3,
                          flush_frames=50) as writer:
        start = 0
        for e, end in enumerate(data["episode_ends"]):
            writer.add_episode(data["frames"][start + e:end + e + 1], data["actions"][start:end],
                               data["rewards"][start:end], states=data["states"][start + e:end + e + 1])
            start = end
    loaded = PixelStore.open(tmp_path / "w.zarr").load()
    np.testing.assert_array_equal(loaded.frames, data["frames"])
    np.testing.assert_array_equal(loaded.states, data["states"])
    np.testing.assert_array_equal(loaded.timeouts, data["timeouts"])  # default: the last step is a timeout
    np.testing.assert_array_equal(loaded.discounts, np.ones(120, np.float32))


def test_interrupted_write_leaves_nothing(tmp_path, fake_dataset):
    data = fake_dataset()
    with pytest.raises(RuntimeError), PixelStoreWriter(tmp_path / "x.zarr", task=TASK, frame_shape=(3, 8, 8),
                                                       act_dim=2) as writer:
        writer.add_episode(data["frames"][:6], data["actions"][:5], data["rewards"][:5])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PixelStoreError, match=r"closed \(already aborted\)"):
        writer.add_episode(data["frames"][:6], data["actions"][:5], data["rewards"][:5])


def test_commit_twice_is_refused(tmp_path, fake_dataset):
    data = fake_dataset()
    with PixelStoreWriter(tmp_path / "x.zarr", task=TASK, frame_shape=(3, 8, 8), act_dim=2) as writer:
        writer.add_episode(data["frames"][:6], data["actions"][:5], data["rewards"][:5])
    assert PixelStore.open(tmp_path / "x.zarr").num_steps == 5
    with pytest.raises(PixelStoreError, match=r"^the writer of .*x\.zarr is closed \(already committed\)$"):
        writer.commit()


def test_killed_writer_leftover_is_refused_then_removed(tmp_path, fake_dataset):
    script = (
        "import os, numpy as np\n"
        "from gta_pixel.pixelstore import PixelStoreWriter\n"
        f"w = PixelStoreWriter({str(tmp_path / 'k.zarr')!r}, task={{'kind': 'fake'}}, frame_shape=(3, 2, 2), act_dim=1)\n"
        "w.add_episode(np.zeros((3, 3, 2, 2), np.uint8), np.zeros((2, 1)), np.zeros(2))\n"
        "w._flush()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ})
    (leftover,) = list(tmp_path.iterdir())
    assert leftover.name.startswith(".k.zarr.tmp-")
    with pytest.raises(PixelStoreError, match="incomplete"):
        PixelStore.open(leftover)
    write_pixel_store(tmp_path / "k.zarr", **fake_dataset(), task=TASK)
    assert [p.name for p in tmp_path.iterdir()] == ["k.zarr"]


def test_refusals(tmp_path, fake_dataset):
    data = fake_dataset()
    path = tmp_path / "p.zarr"
    write_pixel_store(path, **data, task=TASK)
    with pytest.raises(PixelStoreError, match="already exists"):
        write_pixel_store(path, **data, task=TASK)
    write_pixel_store(path, **fake_dataset(seed=1), task=TASK, overwrite=True)
    np.testing.assert_array_equal(PixelStore.open(path).load().frames, fake_dataset(seed=1)["frames"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(PixelStoreError, match="not a pixel store"):
        write_pixel_store(other, **data, task=TASK, overwrite=True)
    with pytest.raises(PixelStoreError, match="no pixel store"):
        PixelStore.open(tmp_path / "missing.zarr")
    with pytest.raises(PixelStoreError, match="not a Zarr group|not a GTA pixel store"):
        PixelStore.open(other)
    # an incomplete store (complete flag false) and a foreign one (a trajectory store)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(PixelStoreError, match="incomplete"):
        PixelStore.open(path)
    meta["attributes"].update(complete=True, format="gta-trajectory-store")
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(PixelStoreError, match="trajectory store"):
        PixelStore.open(path)
    meta["attributes"].update(format="gta-pixel-store", num_frames=99)
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(PixelStoreError, match="num_frames 99"):
        PixelStore.open(path)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(frames=d["frames"][:-1]), "frames must be"),
    (lambda d: d.update(episode_ends=np.array([5, 4, 13])), "strictly increasing"),
    (lambda d: d["terminals"].__setitem__(2, True), "terminal at step 2"),
    (lambda d: d["timeouts"].__setitem__(4, False), "episode 0 ends in neither"),
    (lambda d: d["rewards"].__setitem__(0, np.nan), "rewards contain NaN"),
    (lambda d: d["discounts"].__setitem__(0, 2.0), r"discounts outside \[0, 1\]"),
    (lambda d: d.update(frames=d["frames"].astype(np.float32)), "frames must be uint8"),
])
def test_bad_data_is_refused(tmp_path, fake_dataset, change, match):
    data = fake_dataset()
    change(data)
    with pytest.raises(PixelStoreError, match=match):
        write_pixel_store(tmp_path / "bad.zarr", **data, task=TASK)
    assert list(tmp_path.iterdir()) == []


# -- frame stacking against V-D4RL's replay buffer ------------------------------------------------------------


class VD4RLBuffer:
    """V-D4RL's EfficientReplayBuffer (drqbc/numpy_replay_buffer.py), restated for index bookkeeping: the
    'frames' are integer ids (our frame rows), the buffer is large enough never to wrap, and each recorded
    position remembers the step row it came from."""

    def __init__(self, size, nstep, discount, frame_stack):
        self.size, self.nstep, self.discount, self.fs = size, nstep, discount, frame_stack
        self.obs = np.full(size, -1, np.int64)
        self.step_of = np.full(size, -1, np.int64)
        self.rew = np.zeros(size, np.float32)
        self.dis = np.zeros(size, np.float32)
        self.valid = np.zeros(size, bool)
        self.index, self.traj_index = 0, 0

    def add(self, first, frame, step_row=-1, reward=0.0, discount=1.0):
        if first:  # frame_stack copies of the first frame; positions up to end + frame_stack invalid
            end = self.index + self.fs
            self.obs[self.index:end] = frame
            self.valid[self.index:end + self.fs + 1] = False
            self.index, self.traj_index = end, 1
        else:
            self.obs[self.index], self.step_of[self.index] = frame, step_row
            self.rew[self.index], self.dis[self.index] = reward, discount
            self.valid[self.index + self.fs] = False
            if self.traj_index >= self.nstep:
                self.valid[self.index - self.nstep + 1] = True
            self.index += 1
            self.traj_index += 1

    def gather(self, i):
        ranges = np.arange(i - self.fs, i + self.nstep)
        obs, nobs = self.obs[ranges[:self.fs]], self.obs[ranges[-self.fs:]]
        rew = np.sum(self.rew[ranges[self.fs:]] * np.power(self.discount, np.arange(self.nstep)))
        dis = self.discount ** self.nstep * self.dis[ranges[-self.fs:][-1]]
        return obs, nobs, rew, dis


@pytest.mark.parametrize("lengths", [(5, 1, 7), (1, 2, 3, 4), (9,), (2, 10, 1, 3)])
@pytest.mark.parametrize("frame_stack, nstep", [(3, 1), (3, 3), (1, 2), (4, 2), (2, 5)])
def test_stack_indices_match_vd4rl_buffer(lengths, frame_stack, nstep):
    gamma = 0.9
    ends = np.cumsum(lengths)
    n = int(ends[-1])
    rng = np.random.default_rng(len(lengths) * 31 + frame_stack * 7 + nstep)
    rewards = rng.normal(size=n).astype(np.float32)
    discounts = rng.choice([0.0, 1.0, 0.5], size=n).astype(np.float32)
    buf = VD4RLBuffer(4 * n + 8 * len(lengths) * frame_stack + 16, nstep, gamma, frame_stack)
    start = 0
    for e, end in enumerate(ends):
        buf.add(True, start + e)  # frame row of the episode's first frame
        for i in range(start, end):  # step i produces frame row i + e + 1
            buf.add(False, i + e + 1, step_row=i, reward=rewards[i], discount=discounts[i])
        start = end
    idx = stack_indices(ends, frame_stack, nstep)
    reward_n, discount_n = nstep_returns(rewards, discounts, idx.nstep_rows, gamma)
    valid_positions = np.flatnonzero(buf.valid)
    np.testing.assert_array_equal(np.sort(buf.step_of[valid_positions]), np.flatnonzero(idx.valid))
    assert idx.valid.sum() == sum(max(0, length - nstep + 1) for length in lengths)
    for pos in valid_positions:
        row = buf.step_of[pos]
        obs, nobs, rew, dis = buf.gather(pos)
        np.testing.assert_array_equal(idx.obs_frames[row], obs)
        np.testing.assert_array_equal(idx.next_frames[row], nobs)
        assert reward_n[row] == pytest.approx(rew, rel=1e-5, abs=1e-6)
        assert discount_n[row] == pytest.approx(dis, rel=1e-6)
    # every row's indices stay inside its own episode, invalid ones included
    rows = frame_rows(ends)
    ep = np.searchsorted(ends, np.arange(n), side="right")
    first = (ends - np.asarray(lengths) + np.arange(len(ends)))[ep]
    last = first + np.asarray(lengths)[ep]
    for arr in (idx.obs_frames, idx.next_frames):
        assert (arr >= first[:, None]).all() and (arr <= last[:, None]).all()
    np.testing.assert_array_equal(idx.obs_frames[:, -1], rows)  # the newest frame is the step's own frame
    np.testing.assert_array_equal(idx.next_frames[idx.valid, -1], rows[idx.valid] + nstep)


def test_stack_indices_hand_case():
    # one episode of 2 steps (frames 0..2) and one of 3 (frames 3..6), S = 3, n = 1
    idx = stack_indices(np.array([2, 5]), 3, 1)
    np.testing.assert_array_equal(idx.obs_frames, [[0, 0, 0], [0, 0, 1], [3, 3, 3], [3, 3, 4], [3, 4, 5]])
    np.testing.assert_array_equal(idx.next_frames, [[0, 0, 1], [0, 1, 2], [3, 3, 4], [3, 4, 5], [4, 5, 6]])
    assert idx.valid.all()
    idx = stack_indices(np.array([2, 5]), 2, 2)
    np.testing.assert_array_equal(idx.valid, [True, False, True, True, False])
    np.testing.assert_array_equal(idx.next_frames[[0, 2, 3]], [[1, 2], [4, 5], [5, 6]])
    np.testing.assert_array_equal(idx.nstep_rows, [[0, 1], [1, 1], [2, 3], [3, 4], [4, 4]])
    with pytest.raises(PixelStoreError, match="at least 1"):
        stack_indices(np.array([2]), 0)
