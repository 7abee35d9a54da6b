"""Metrics against analytic cases and float64 brute force (GTA Eq. 14, 15, F.6, F.7)."""

from __future__ import annotations

import numpy as np
import pytest

from gta_eval import metrics as M
from gta_eval.errors import EvalError


def brute_force_nn(q, r):
    d = ((q[:, None, :].astype(np.float64) - r[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d.min(1), d.argmin(1)


@pytest.mark.parametrize("dim", [1, 7, 23])
def test_nearest_neighbor_matches_brute_force(dim):
    rng = np.random.default_rng(dim)
    ref = rng.normal(size=(3000, dim)) * rng.uniform(0.1, 10, dim) + 50.0  # offset: cancellation-prone
    q = rng.normal(size=(500, dim)) * 3 + 50.0
    d, i = M.nearest_neighbor(q, ref, device="cpu", query_chunk=97, ref_chunk=611)
    d_ref, i_ref = brute_force_nn(q, ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-6, atol=1e-9)
    # Indices may differ only on exact ties.
    np.testing.assert_allclose(((q - ref[i]) ** 2).sum(1), d_ref, rtol=1e-6, atol=1e-9)
    assert (i == i_ref).mean() > 0.99


def test_nearest_neighbor_of_members_is_exactly_zero():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 17)).astype(np.float32) * 100
    d, i = M.nearest_neighbor(ref[::7], ref, device="cpu", ref_chunk=300)
    assert np.all(d == 0.0)
    np.testing.assert_array_equal(i, np.arange(0, 2000, 7))


@pytest.mark.gpu
def test_nearest_neighbor_cuda_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    rng = np.random.default_rng(1)
    ref, q = rng.normal(size=(20000, 23)), rng.normal(size=(1000, 23))
    d_gpu, _ = M.nearest_neighbor(q, ref, device="cuda")
    d_cpu, _ = M.nearest_neighbor(q, ref, device="cpu")
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-9)


def test_novelty_of_subset_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3000, 11)) * rng.uniform(0.5, 5, 11)
    act = rng.uniform(-1, 1, size=(3000, 3))
    sub = rng.choice(3000, 400, replace=False)
    zero = M.novelty(obs[sub], act[sub], obs, act, device="cpu")
    assert all(v == 0.0 for v in zero.as_dict().values())
    levels = [0.01, 0.1, 0.5, 1.0]
    vals = []
    for sigma in levels:
        n = M.novelty(obs[sub] + sigma * obs.std(0) * rng.normal(size=(400, 11)),
                      act[sub] + sigma * act.std(0) * rng.normal(size=(400, 3)), obs, act, device="cpu")
        vals.append((n.state, n.action, n.state_action))
    vals = np.array(vals)
    assert np.all(np.diff(vals, axis=0) > 0)
    # Small noise: the nearest neighbour is the source row, so l2 novelty ~ sigma * sqrt(E chi^2_d).
    assert vals[0, 0] == pytest.approx(0.01 * np.sqrt(11), rel=0.15)


def test_novelty_is_z_scored_with_original_statistics():
    orig_obs = np.array([[0.0, 0.0], [10.0, 100.0]])  # std 5 and 50
    orig_act = np.array([[0.0], [2.0]])  # std 1
    n = M.novelty(np.array([[0.0, 50.0]]), np.array([[0.5]]), orig_obs, orig_act, device="cpu")
    assert n.state_sq == pytest.approx(1.0)  # (50 / 50)^2 to the nearest of the two rows
    assert n.action_sq == pytest.approx(0.25)
    assert n.state_action == pytest.approx(np.sqrt(1.25))


def test_dynamic_mse_analytic():
    rng = np.random.default_rng(0)
    orig = rng.normal(size=(1000, 4)) * [1.0, 2.0, 5.0, 0.1]
    z = M.ZScore.fit(orig)
    true_next = rng.normal(size=(200, 4))
    assert M.dynamic_mse(true_next, true_next, z) == 0.0
    # An error of delta standard deviations in every dimension gives MSE delta^2.
    gen = true_next + 0.3 * z.std
    assert M.dynamic_mse(gen, true_next, z) == pytest.approx(0.09, rel=1e-12)
    valid = np.zeros(200, bool)
    valid[:10] = True
    gen[10:] += 100.0
    assert M.dynamic_mse(gen, true_next, z, valid) == pytest.approx(0.09, rel=1e-12)
    with pytest.raises(EvalError, match="no valid transitions"):
        M.dynamic_mse(gen, true_next, z, np.zeros(200, bool))


def test_window_and_segment_returns_against_loops():
    rng = np.random.default_rng(0)
    rew = rng.normal(size=50)
    ends = np.array([10, 13, 30, 50])
    got = M.window_returns(rew, ends, 4)
    want, start = [], 0
    for end in ends:
        want += [rew[t : t + 4].sum() for t in range(start, end - 3)]
        start = end
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(M.segment_returns(rew, ends), [rew[:10].sum(), rew[10:13].sum(), rew[13:30].sum(), rew[30:].sum()])


def test_condition_correlation():
    c = np.arange(20.0)
    assert M.condition_correlation(c, 3 * c + 1)["pearson_r"] == pytest.approx(1.0)
    assert M.condition_correlation(c[:, None], -c)["pearson_r"] == pytest.approx(-1.0)
    with pytest.raises(EvalError, match="constant"):
        M.condition_correlation(np.ones(5), np.arange(5.0))
    with pytest.raises(EvalError, match="one scalar"):
        M.condition_correlation(np.ones((5, 2)), np.arange(5.0))


def test_nearest_neighbor_float64_fallback_on_near_ties():
    # With one candidate the error-bound check cannot rule out any other row, so every query goes
    # through the float64 fallback search, which must still return the exact minimum.
    rng = np.random.default_rng(3)
    ref = 1000.0 + rng.normal(size=(4000, 2)) * 1e-3
    q = 1000.0 + rng.normal(size=(300, 2)) * 1e-3
    d, _ = M.nearest_neighbor(q, ref, device="cpu", refine=1, ref_chunk=512)
    np.testing.assert_allclose(d, brute_force_nn(q, ref)[0], rtol=1e-6, atol=1e-18)
