import json

import numpy as np
import pytest

from gta_data.policies import PolicyError, load_policy_file, random_actor, save_policy_file


def _reference_act(actor, obs, noise):
    """float64 forward pass written out from the SAC equations."""
    x = obs.astype(np.float64)
    for i, (w, b) in enumerate(actor.weights):
        x = x @ w.astype(np.float64) + b
        if i < len(actor.weights) - 1:
            x = np.maximum(x, 0)
    a = actor.act_dim
    mean, raw = x[:, :a], x[:, a:]
    log_std = actor.log_std_min + 0.5 * (actor.log_std_max - actor.log_std_min) * (np.tanh(raw) + 1)
    u = mean if noise is None else mean + np.exp(log_std) * noise
    return np.tanh(u) * (actor.action_high - actor.action_low) / 2 + (actor.action_high + actor.action_low) / 2


def test_forward_matches_float64_reference():
    actor = random_actor(5, 3, hidden=(16, 8), seed=1)
    actor.action_low = np.array([-1, -2, 0], np.float32)
    actor.action_high = np.array([1, 2, 1], np.float32)
    obs = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(actor.act(obs), _reference_act(actor, obs, None), atol=1e-5)
    np.testing.assert_allclose(actor.act(obs, noise), _reference_act(actor, obs, noise), atol=1e-5)
    _, log_std = actor.distribution(obs)
    assert (log_std >= -5).all() and (log_std <= 2).all()
    # Actions stay inside the bounds; a seeded sample is reproducible.
    a = actor.sample(obs, np.random.default_rng(3))
    assert (a >= actor.action_low).all() and (a <= actor.action_high).all()
    np.testing.assert_array_equal(a, actor.sample(obs, np.random.default_rng(3)))
    assert not np.array_equal(a, actor.act(obs))
    with pytest.raises(PolicyError, match=r"\[B, 5\]"):
        actor.act(np.zeros((2, 4)))


def test_round_trip_and_atomic_write(tmp_path):
    medium = random_actor(4, 2, hidden=(8,), seed=0, step=1000, eval_return=10.5)
    expert = random_actor(4, 2, hidden=(8,), seed=1, step=5000, eval_return=31.0)
    path = save_policy_file(tmp_path / "p.npz", "Env-v0", {"medium": medium, "expert": expert},
                            provenance={"algorithm": "sac"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]  # no temporary left behind
    loaded = load_policy_file(path)
    assert loaded.env_id == "Env-v0" and set(loaded.actors) == {"medium", "expert"}
    assert loaded.actors["expert"].info == {"step": 5000, "eval_return": 31.0}
    assert loaded.meta["provenance"] == {"algorithm": "sac"}
    obs = np.ones((3, 4), np.float32)
    for name, actor in (("medium", medium), ("expert", expert)):
        np.testing.assert_array_equal(loaded.actors[name].act(obs), actor.act(obs))


def test_bad_files(tmp_path):
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy_file(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PolicyError, match="not a behaviour policy file"):
        load_policy_file(tmp_path / "other.npz")
    actor = random_actor(4, 2, hidden=(8,))
    path = save_policy_file(tmp_path / "p.npz", "Env-v0", {"m": actor})
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    del arrays["m/w1"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(PolicyError, match="lacks array"):
        load_policy_file(tmp_path / "broken.npz")
    meta = json.loads(str(arrays["__meta__"]))
    meta["version"] = 99
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(PolicyError, match="unsupported format"):
        load_policy_file(tmp_path / "future.npz")
    with pytest.raises(PolicyError, match="other dimensions"):
        save_policy_file(tmp_path / "q.npz", "Env-v0", {"a": actor, "b": random_actor(5, 2)})
