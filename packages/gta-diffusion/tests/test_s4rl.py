"""S4RL baseline (GTA appendix C.1): noise scale and independence, untouched actions/rewards/terminals,
trajectory consistency, exact upsampling, seeds, store validity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gta_data import StoreError, TrajectoryStore, Transitions, write_store
from gta_diffusion.baselines.s4rl import S4RLConfig, augment_s4rl, segment_plan
from gta_diffusion.errors import DiffusionError


def _source(path, *, episodes=30, length=40, obs_dim=3, seed=0):
    """Random-walk episodes with s'_t = s_{t+1}; every third episode ends in a terminal, the others time out."""
    rng = np.random.default_rng(seed)
    parts = []
    for e in range(episodes):
        s = np.cumsum(0.1 * rng.standard_normal((length + 1, obs_dim)), axis=0) + rng.uniform(-1, 1, obs_dim)
        term, tout = np.zeros(length, bool), np.zeros(length, bool)
        (term if e % 3 == 0 else tout)[-1] = True
        parts.append(Transitions(s[:-1], rng.uniform(-1, 1, (length, 2)), rng.standard_normal(length), s[1:],
                                 term, tout))
    ends = np.arange(1, episodes + 1) * length
    return write_store(path, Transitions.concatenate(parts), ends, env_id="Walk-v0", ref_min_score=0.0,
                       ref_max_score=1.0)


@pytest.fixture
def source(tmp_path):
    return _source(tmp_path / "src.zarr")


def _source_rows(aug: TrajectoryStore) -> np.ndarray:
    """Source row of every augmented row, from the per-segment ``source_start``."""
    starts = aug.meta("source_start")
    lengths = aug.episode_lengths
    return np.repeat(starts, lengths) + (np.arange(aug.num_transitions) - np.repeat(aug.episode_starts, lengths))


@pytest.mark.parametrize("sigma", [3e-4, 0.05])
def test_noise_scale_and_untouched_fields(tmp_path, source, sigma):
    n = 3 * source.num_transitions
    aug = augment_s4rl(source.path, tmp_path / "aug.zarr",
                       S4RLConfig(sigma=sigma, num_transitions=n, seed=1, scale="absolute"))
    a, s = aug.validate().load(), source.load()
    rows = _source_rows(aug)
    d_obs = a.observations.astype(np.float64) - s.observations[rows]
    d_next = a.next_observations.astype(np.float64) - s.next_observations[rows]
    # 36k noise draws: the std is within ~1.5% of sigma; float32 rounding of s~ adds at most ~1e-7.
    assert abs(d_obs.std() / sigma - 1) < 0.03 and abs(d_next.std() / sigma - 1) < 0.03
    assert abs(d_obs.mean()) < 0.05 * sigma
    # Within one transition the noise on s and on s' is independent.
    assert abs(np.corrcoef(d_obs.ravel(), d_next.ravel())[0, 1]) < 0.03
    np.testing.assert_array_equal(a.actions, s.actions[rows])
    np.testing.assert_array_equal(a.rewards, s.rewards[rows])
    np.testing.assert_array_equal(a.terminals, s.terminals[rows])
    np.testing.assert_array_equal(a.timeouts, s.timeouts[rows])


def test_default_noise_is_sigma_in_z_scored_units(tmp_path):
    # The authors add the noise to z-scored states: in raw units its std is sigma (std_i + 1e-3) per dimension.
    src = _source(tmp_path / "src.zarr", obs_dim=3)
    s = src.load()
    s.observations[:, 1] *= 50.0  # dimensions of very different spread
    s.next_observations[:, 1] *= 50.0
    src = write_store(tmp_path / "wide.zarr", s, src.episode_ends, env_id="Walk-v0")
    n = 3 * src.num_transitions
    aug = augment_s4rl(src.path, tmp_path / "aug.zarr", S4RLConfig(sigma=0.05, num_transitions=n, seed=1))
    rows = _source_rows(aug)
    d_obs = aug.load().observations.astype(np.float64) - s.observations[rows]
    expected = 0.05 * (s.observations.astype(np.float64).std(0) + 1e-3)
    np.testing.assert_allclose(d_obs.std(0), expected, rtol=0.04)
    np.testing.assert_allclose(aug.provenance["noise_std"], expected, rtol=1e-12)
    assert expected[1] > 20 * expected[0]
    with pytest.raises(DiffusionError, match="scale must be one of"):
        S4RLConfig(scale="z").check()


def test_segments_stay_trajectories(tmp_path, source):
    aug = augment_s4rl(source.path, tmp_path / "aug.zarr", S4RLConfig(num_transitions=1000, seed=0))
    a = aug.load()
    inside = np.ones(aug.num_transitions, bool)
    inside[aug.episode_ends - 1] = False  # the last row of a segment has no successor in it
    idx = np.flatnonzero(inside)
    # The same noise vector perturbs s'_t and s_{t+1}: the augmented segment is still a trajectory.
    np.testing.assert_array_equal(a.next_observations[idx], a.observations[idx + 1])
    assert not np.array_equal(a.observations, source.load().observations[_source_rows(aug)])


def test_upsampling_is_exact_and_balanced(tmp_path, source):
    n_src = source.num_transitions
    n = 2 * n_src + 70  # two full passes and a partial one that ends inside an episode (length 40)
    aug = augment_s4rl(source.path, tmp_path / "aug.zarr", S4RLConfig(num_transitions=n, seed=3))
    assert aug.num_transitions == n and aug.validate()
    counts = np.bincount(_source_rows(aug), minlength=n_src)
    assert counts.min() == 2 and counts.max() == 3 and counts.sum() == n
    # The cut segment ends in a timeout, not in the terminal of its (unfinished) source episode.
    a = aug.load()
    last = aug.num_transitions - 1
    assert aug.episode_lengths[-1] == 30 and a.timeouts[last] and not a.terminals[last]
    # Terminals only ever sit at segment ends (the store checks it on load; count them here too).
    assert set(np.flatnonzero(a.terminals) + 1) <= set(aug.episode_ends.tolist())
    prov = aug.provenance
    assert prov["method"] == "S4RL" and prov["s4rl"] == {"sigma": 3e-4, "num_transitions": n, "seed": 3,
                                                        "scale": "state_std"}
    assert prov["source_env_id"] == "Walk-v0" and aug.ref_scores == (0.0, 1.0)
    seeds = aug.meta("seed")
    np.testing.assert_array_equal(seeds, (3 << 32) + np.arange(aug.num_episodes))


def test_segment_plan_analytic():
    ends = np.array([3, 5, 9])  # lengths 3, 2, 4
    starts_src = np.array([0, 3, 5])
    starts, stops = segment_plan(ends, 9 + 4, seed=0)
    assert (stops - starts).sum() == 13
    # Pass 0: every episode once in permutation order; pass 1: whole episodes while they fit, then a cut one.
    p0, p1 = (np.random.default_rng([0, p]).permutation(3) for p in (0, 1))
    expected, left = [(starts_src[e], ends[e]) for e in p0], 4
    for e in p1:
        take = min(left, ends[e] - starts_src[e])
        expected.append((starts_src[e], starts_src[e] + take))
        left -= take
        if left == 0:
            break
    assert list(zip(starts.tolist(), stops.tolist(), strict=True)) == [(int(a), int(b)) for a, b in expected]
    # Fewer transitions than the source: one segment, cut to a single transition.
    starts, stops = segment_plan(ends, 1, seed=5)
    assert len(starts) == 1 and stops[0] - starts[0] == 1


def test_deterministic_in_seed(tmp_path, source):
    cfg = S4RLConfig(num_transitions=500, seed=7)
    a = augment_s4rl(source.path, tmp_path / "a.zarr", cfg).load()
    b = augment_s4rl(source.path, tmp_path / "b.zarr", cfg).load()
    c = augment_s4rl(source.path, tmp_path / "c.zarr", S4RLConfig(num_transitions=500, seed=8)).load()
    np.testing.assert_array_equal(a.observations, b.observations)
    assert not np.array_equal(a.observations, c.observations)


@pytest.mark.parametrize("cfg, message", [
    (S4RLConfig(sigma=0.0), "sigma must be a positive number"),
    (S4RLConfig(sigma=-1e-3), "sigma must be a positive number"),
    (S4RLConfig(sigma=float("nan")), "sigma must be a positive number"),
    (S4RLConfig(num_transitions=0), "num_transitions must be a positive integer"),
    (S4RLConfig(seed=-1), "seed must be an integer"),
])
def test_bad_config(tmp_path, source, cfg, message):
    with pytest.raises(DiffusionError, match=message):
        augment_s4rl(source.path, tmp_path / "aug.zarr", cfg)
    assert not (tmp_path / "aug.zarr").exists()


def test_bad_store_and_existing_output(tmp_path, source):
    with pytest.raises(StoreError, match="no store"):
        augment_s4rl(tmp_path / "missing.zarr", tmp_path / "aug.zarr", S4RLConfig(num_transitions=10))
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError):
        augment_s4rl(tmp_path / "plain", tmp_path / "aug.zarr", S4RLConfig(num_transitions=10))
    augment_s4rl(source.path, tmp_path / "aug.zarr", S4RLConfig(num_transitions=10))
    with pytest.raises(DiffusionError, match="already exists"):
        augment_s4rl(source.path, tmp_path / "aug.zarr", S4RLConfig(num_transitions=10))
    assert TrajectoryStore.open(tmp_path / "aug.zarr").num_transitions == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug.zarr", "plain", "src.zarr"]  # no temp leftovers


def test_cli(tmp_path, source):
    runner = CliRunner()
    from gta_diffusion.cli import app

    out = tmp_path / "aug.zarr"
    res = runner.invoke(app, ["augment", "--method", "s4rl", "--data", str(source.path), "--out", str(out), "--num-transitions", "250",
                              "--sigma", "1e-3", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert "250 transitions" in res.output
    assert TrajectoryStore.open(out).provenance["s4rl"]["sigma"] == 1e-3
    res = runner.invoke(app, ["augment", "--method", "s4rl", "--data", str(source.path), "--out", str(tmp_path / "b.zarr"), "--sigma", "0"])
    assert res.exit_code == 1 and "error: sigma must be a positive number" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "b.zarr").exists()
    res = runner.invoke(app, ["augment", "--method", "s4rl", "--data", str(source.path), "--out", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output
