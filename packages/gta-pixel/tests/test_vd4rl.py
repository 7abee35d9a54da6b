import shutil

import numpy as np
import pytest

from gta_pixel.errors import VD4RLError
from gta_pixel.vd4rl import (
    Episode,
    ReadStats,
    cubic_weights,
    import_vd4rl,
    infer_task_name,
    iter_hdf5_episodes,
    iter_npz_episodes,
    resize_bicubic,
    write_hdf5_shards,
    write_npz_episodes,
)

h5py = pytest.importorskip("h5py")


def make_episodes(lengths=(6, 4, 5), size=8, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return [Episode(frames=rng.integers(0, 256, (n + 1, 3, size, size), dtype=np.uint8),
                    actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                    rewards=rng.uniform(0, 2, n).astype(np.float32), discounts=np.ones(n, np.float32))
            for n in lengths]


def assert_same(read, expected, fragment_rows=0):
    np.testing.assert_array_equal(read.frames, expected.frames[fragment_rows:])
    np.testing.assert_array_equal(read.actions, expected.actions[fragment_rows:])
    np.testing.assert_array_equal(read.rewards, expected.rewards[fragment_rows:])
    np.testing.assert_array_equal(read.discounts, expected.discounts[fragment_rows:])


def test_hdf5_exact_layout(tmp_path):
    episodes = make_episodes()
    (path,) = write_hdf5_shards(tmp_path, episodes)
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["action", "discount", "observation", "reward", "step_type"]
        assert f["observation"].shape == (18, 3, 8, 8) and f["observation"].dtype == np.uint8
        assert f["observation"].compression == "gzip"
        np.testing.assert_array_equal(f["step_type"][:7], [0, 1, 1, 1, 1, 1, 2])
        np.testing.assert_array_equal(f["action"][0], [0, 0])  # the reset row: zero action, reward 0
        np.testing.assert_array_equal(f["action"][1:7], episodes[0].actions)  # action on the row it produced
        assert f["reward"][0] == 0 and f["discount"][0] == 1
        np.testing.assert_array_equal(f["observation"][7], episodes[1].frames[0])


@pytest.mark.parametrize("shards", [1, 4, 12])
def test_hdf5_shards_cut_mid_episode_read_back_joined(tmp_path, shards):
    episodes = make_episodes()
    write_hdf5_shards(tmp_path, episodes, shards=shards)
    stats = ReadStats()
    read = list(iter_hdf5_episodes(tmp_path, stats, join_shards=True))
    assert len(read) == 3 and stats.fragments == stats.cut == 0
    for r, e in zip(read, episodes, strict=True):
        assert_same(r, e)
        assert not (r.terminal or r.cut or r.fragment)
    # 12 shards: 10.hdf5 and 11.hdf5 come after 9.hdf5 (natural order), not after 1.hdf5
    assert stats.files == [f"{i}.hdf5" for i in range(shards)]
    if shards > 1:
        assert len(read[0].source) > 1  # the first episode spans shards


def test_hdf5_data_starting_and_ending_mid_episode(tmp_path):
    episodes = make_episodes()
    paths = write_hdf5_shards(tmp_path, episodes, shards=6)  # 18 rows -> 3 per shard
    paths[0].unlink()  # rows 0-2 gone: the data begins at row 3 of episode 0 (7 rows)
    paths[-1].unlink()  # rows 15-17 gone: episode 2 (rows 12-17) loses its end
    stats = ReadStats()
    read = list(iter_hdf5_episodes(tmp_path, stats, join_shards=True))
    assert len(read) == 3 and stats.fragments == 1 and stats.cut == 1
    assert read[0].fragment and not read[0].cut
    assert_same(read[0], episodes[0], fragment_rows=3)  # row 3 serves as the reset frame
    assert_same(read[1], episodes[1])
    cut = read[2]
    assert cut.cut and not cut.fragment and len(cut) == 2
    np.testing.assert_array_equal(cut.frames, episodes[2].frames[:3])
    np.testing.assert_array_equal(cut.actions, episodes[2].actions[:2])
    # As V-D4RL's loader: 1.hdf5 (row 3), 2.hdf5 (row 6, episode 0's last) and 3.hdf5 (row 9) begin mid-episode
    # and are skipped; 4.hdf5 begins episode 2 and ends it after 2 steps.
    stats = ReadStats()
    (only,) = iter_hdf5_episodes(tmp_path, stats)
    assert stats.skipped_files == ["1.hdf5", "2.hdf5", "3.hdf5"] and stats.skipped_rows == 9
    assert only.cut and not only.fragment and stats.cut == 1 and stats.fragments == 0
    np.testing.assert_array_equal(only.frames, cut.frames)
    np.testing.assert_array_equal(only.actions, cut.actions)


def test_hdf5_shards_read_as_vd4rl_cut_episodes_at_shard_ends(tmp_path):
    episodes = make_episodes()  # rows 0-6, 7-11, 12-17
    write_hdf5_shards(tmp_path, episodes, shards=3)  # rows 0-5, 6-11, 12-17
    stats = ReadStats()
    read = list(iter_hdf5_episodes(tmp_path, stats))
    # 0.hdf5: episode 0 without its last row (5 of 6 steps, cut); 1.hdf5 begins at episode 0's last row and is
    # skipped with episode 1 in it; 2.hdf5 is episode 2 whole.
    assert stats.skipped_files == ["1.hdf5"] and stats.skipped_rows == 6 and stats.cut == 1
    assert [len(e) for e in read] == [5, 5] and read[0].cut and not read[1].cut
    np.testing.assert_array_equal(read[0].frames, episodes[0].frames[:6])
    np.testing.assert_array_equal(read[0].actions, episodes[0].actions[:5])
    assert_same(read[1], episodes[2])


def vd4rl_sampled_transitions(directory, frame_stack, nstep, discount):
    """Every transition V-D4RL's DrQ+BC can sample from a directory of shards, written out plainly from its
    loader (drqbc/utils.py: files in string order, a file whose first row is not `first` fails on that row and
    is skipped, an episode begins at a `first` row and nowhere else) and its EfficientReplayBuffer
    (numpy_replay_buffer.py: a `first` row records frame_stack copies of its frame, every other row its frame,
    action, reward and discount; index i is valid once n rows follow it in its episode; the sample of i is
    frames i-S..i-1, action i, sum_k gamma^k reward i+k, frames i+n-S..i+n-1, gamma^n discount i+n-1)."""
    obs, act, rew, dis, valid = [], [], [], [], []
    for path in sorted(directory.glob("*.hdf5")):
        with h5py.File(path, "r") as f:
            data = {k: f[k][:] for k in f.keys()}
        if data["step_type"][0] != 0:
            continue
        for i, step_type in enumerate(data["step_type"]):
            if step_type == 0:
                for _ in range(frame_stack):
                    obs.append(data["observation"][i])
                    act.append(np.zeros_like(data["action"][i]))
                    rew.append(0.0)
                    dis.append(0.0)
                    valid.append(False)
                traj = 1
                continue
            obs.append(data["observation"][i])
            act.append(data["action"][i])
            rew.append(data["reward"][i])
            dis.append(data["discount"][i])
            valid.append(False)
            if traj >= nstep:
                valid[len(obs) - nstep] = True
            traj += 1
    out = []
    for i in np.flatnonzero(valid):
        out.append((np.stack(obs[i - frame_stack:i]), act[i],
                    sum(discount ** k * rew[i + k] for k in range(nstep)),
                    np.stack(obs[i + nstep - frame_stack:i + nstep]), discount ** nstep * dis[i + nstep - 1]))
    return out


@pytest.mark.parametrize("shards,nstep", [(1, 1), (3, 3), (4, 1), (6, 3), (12, 1)])
def test_hdf5_import_holds_exactly_what_vd4rl_samples(tmp_path, shards, nstep):
    from gta_pixel.pixelstore import nstep_returns, stack_indices

    episodes = make_episodes(lengths=(6, 4, 5, 7, 3), seed=3)  # 30 rows
    episodes[3].discounts[-1] = 0.0  # a terminal
    src = tmp_path / "walker_walk"
    write_hdf5_shards(src, episodes, shards=shards)
    expected = vd4rl_sampled_transitions(src, 3, nstep, 0.99)
    data = import_vd4rl(src, tmp_path / "p.zarr").load()
    index = stack_indices(data.episode_ends, 3, nstep)
    reward, discount = nstep_returns(data.rewards, data.discounts, index.nstep_rows, 0.99)
    steps = np.flatnonzero(index.valid)
    ours = [(data.frames[index.obs_frames[t]], data.actions[t], reward[t], data.frames[index.next_frames[t]],
             discount[t]) for t in steps]
    assert len(ours) == len(expected) > 0

    def key(x):
        return x[0].tobytes() + np.asarray(x[1], np.float32).tobytes()

    for a, b in zip(sorted(ours, key=key), sorted(expected, key=key), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[2], b[2], rtol=1e-6)
        np.testing.assert_array_equal(a[3], b[3])
        np.testing.assert_allclose(a[4], b[4], rtol=1e-6)


def test_hdf5_terminal_and_errors(tmp_path):
    episodes = make_episodes(lengths=(3, 2))
    episodes[1].discounts[-1] = 0.0
    write_hdf5_shards(tmp_path / "a", episodes)
    read = list(iter_hdf5_episodes(tmp_path / "a"))
    assert not read[0].terminal and read[1].terminal
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f.create_dataset("observation", data=np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(VD4RLError, match="lacks the dataset"):
        list(iter_hdf5_episodes(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VD4RLError, match="no \\*.hdf5 files"):
        list(iter_hdf5_episodes(tmp_path / "empty"))
    with pytest.raises(VD4RLError, match="not a directory"):
        list(iter_hdf5_episodes(tmp_path / "missing"))


def test_import_hdf5(tmp_path):
    episodes = make_episodes(lengths=(6, 4, 5), size=84)
    src = tmp_path / "vd4rl_data" / "main" / "walker_walk" / "medium" / "84px"
    write_hdf5_shards(src, episodes, shards=4)
    assert infer_task_name(src) == "walker_walk"
    store = import_vd4rl(src, tmp_path / "p.zarr", join_shards=True)
    assert store.task == {"kind": "dmc", "domain": "walker", "task": "walk", "size": 84, "camera": 0,
                          "action_repeat": 2}
    assert (store.num_episodes, store.num_steps, store.num_frames) == (3, 15, 18)
    data = store.load()
    np.testing.assert_array_equal(data.frames, np.concatenate([e.frames for e in episodes]))
    np.testing.assert_array_equal(data.actions, np.concatenate([e.actions for e in episodes]))
    np.testing.assert_array_equal(data.timeouts, np.isin(np.arange(15), [5, 9, 14]))
    assert store.provenance["read"]["files"] == ["0.hdf5", "1.hdf5", "2.hdf5", "3.hdf5"]
    assert store.provenance["shards"] == "joined" and store.ref_scores == (0.0, 1000.0)
    # The default reads each shard as V-D4RL does: shards of 5, 5, 4, 4 rows; only 0.hdf5 begins an episode.
    vd4rl = import_vd4rl(src, tmp_path / "v.zarr")
    assert (vd4rl.num_episodes, vd4rl.num_steps) == (1, 4) and vd4rl.provenance["shards"] == "as V-D4RL"
    assert vd4rl.provenance["read"]["skipped_files"] == ["1.hdf5", "2.hdf5", "3.hdf5"]
    np.testing.assert_array_equal(vd4rl.load().actions, episodes[0].actions[:4])
    plain = tmp_path / "plain"
    shutil.copytree(src, plain)
    with pytest.raises(VD4RLError, match="pass --task"):
        import_vd4rl(plain, tmp_path / "q.zarr")
    assert import_vd4rl(plain, tmp_path / "q.zarr", task="cheetah_run").task["domain"] == "cheetah"
    (src / "0.hdf5").unlink()  # every shard left begins mid-episode
    with pytest.raises(VD4RLError, match="3 shard\\(s\\) begin mid-episode.*--join-shards"):
        import_vd4rl(src, tmp_path / "w.zarr")


# -- 64px npz --------------------------------------------------------------------------------------------------


def test_npz_exact_layout_and_read_back(tmp_path):
    episodes = make_episodes(lengths=(3, 5), size=6)
    episodes[1].terminal = True
    episodes[1].discounts[-1] = 0.0
    extra = [{"orientations": np.full((len(e) + 1, 2), i, np.float32), "height": np.arange(len(e) + 1.0)}
             for i, e in enumerate(episodes)]
    paths = write_npz_episodes(tmp_path, episodes, extra=extra)
    assert paths[0].name.endswith("-4.npz") and paths[0].name.count("-") == 2
    with np.load(paths[0]) as f:
        assert f["image"].shape == (4, 6, 6, 3) and f["image"].dtype == np.uint8
        np.testing.assert_array_equal(f["image"][1], episodes[0].frames[1].transpose(1, 2, 0))
        np.testing.assert_array_equal(f["is_first"], [True, False, False, False])
        np.testing.assert_array_equal(f["is_last"], [False, False, False, True])
        assert not f["is_terminal"].any() and (f["action"][0] == 0).all()
    read = list(iter_npz_episodes(tmp_path, states=True))
    for r, e, x in zip(read, episodes, extra, strict=True):
        assert_same(r, e)
        np.testing.assert_array_equal(r.states, np.concatenate([x["orientations"], x["height"][:, None]], axis=1))
    assert read[1].terminal and not read[0].terminal


def test_npz_import_resizes_64_to_84(tmp_path):
    episodes = make_episodes(lengths=(2, 3), size=64)
    src = tmp_path / "cheetah_run" / "expert" / "64px"
    write_npz_episodes(src, episodes)
    store = import_vd4rl(src, tmp_path / "p.zarr")
    assert store.frame_shape == (3, 84, 84) and store.task["size"] == 84 and store.task["domain"] == "cheetah"
    frames = store.load().frames
    expected = resize_bicubic(episodes[0].frames.transpose(0, 2, 3, 1), 84).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(frames[:3], expected)
    assert store.provenance["resized_to"] == 84
    native = import_vd4rl(src, tmp_path / "n.zarr", size=64)
    np.testing.assert_array_equal(native.load().frames[:3], episodes[0].frames)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "x.npz", image=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(VD4RLError, match="lacks the key"):
        list(iter_npz_episodes(tmp_path))


# -- bicubic resize -------------------------------------------------------------------------------------------


def _keys(d, a=-0.75):
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def test_cubic_weights_against_hand_formula():
    idx, w = cubic_weights(64, 84)
    for i in (0, 1, 41, 83):
        x = (i + 0.5) * 64 / 84 - 0.5
        x0 = int(np.floor(x))
        for k, tap in enumerate(range(x0 - 1, x0 + 3)):
            assert idx[i, k] == min(max(tap, 0), 63)
            assert w[i, k] == pytest.approx(_keys(x - tap), abs=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_resize_reference_and_invariants():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = resize_bicubic(img[None], 84)[0]
    # one output pixel by the float64 definition, written out with explicit loops
    i, j, c = 40, 17, 1
    ys, xs = (i + 0.5) * 64 / 84 - 0.5, (j + 0.5) * 64 / 84 - 0.5
    total = 0.0
    for ty in range(int(np.floor(ys)) - 1, int(np.floor(ys)) + 3):
        for tx in range(int(np.floor(xs)) - 1, int(np.floor(xs)) + 3):
            total += _keys(ys - ty) * _keys(xs - tx) * float(img[min(max(ty, 0), 63), min(max(tx, 0), 63), c])
    assert out[i, j, c] == np.clip(np.rint(total), 0, 255)
    flat = np.full((64, 64, 3), 77, np.uint8)
    assert (resize_bicubic(flat, 84) == 77).all()
    ramp = np.tile((np.arange(64) * 3).astype(np.uint8)[None, :, None], (64, 1, 3))
    got = resize_bicubic(ramp, 84)[0, 4:-4, 0].astype(np.float64)
    xs = (np.arange(84) + 0.5) * 64 / 84 - 0.5
    np.testing.assert_allclose(got, np.rint(3 * xs[4:-4]), atol=1)  # cubic interpolation keeps a ramp linear


def test_resize_close_to_opencv():
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = resize_bicubic(img, 84).astype(int)
    theirs = cv2.resize(img, dsize=(84, 84), interpolation=cv2.INTER_CUBIC).astype(int)
    assert np.abs(ours - theirs).max() <= 1
