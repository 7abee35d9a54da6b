"""Welch's t-test, tables (F.2) and the run readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from gta_eval import stats as S
from gta_eval.errors import EvalError


def test_welch_hand_calculation():
    # a: mean 2.5, var 5/3 -> 5/12 per n; b: mean 6, var 10 -> 2 per n.
    # t = -3.5 / sqrt(29/12); df = (29/12)^2 / ((5/12)^2/3 + 2^2/4).
    w = S.welch_t_test(np.array([1, 2, 3, 4]), np.array([2, 4, 6, 8, 10]))
    t = -3.5 / np.sqrt(29 / 12)
    df = (29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 1.0)
    assert w.t == pytest.approx(t, rel=1e-12) and w.t == pytest.approx(-2.251436, abs=1e-6)
    assert w.df == pytest.approx(df, rel=1e-12) and w.df == pytest.approx(5.52079, abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(80, 2, size=8), rng.normal(84, 1, size=5 + seed)
    w = S.welch_t_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w.t == pytest.approx(ref.statistic, rel=1e-10)
    assert w.p_value == pytest.approx(ref.pvalue, rel=1e-8)


def test_welch_bad_input():
    with pytest.raises(EvalError, match="at least 2"):
        S.welch_t_test(np.array([1.0]), np.array([1.0, 2.0]))
    with pytest.raises(EvalError, match="zero variance"):
        S.welch_t_test(np.ones(3), np.ones(4))


def _write_run(root, name, config, seeds):
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    for seed, finals in seeds.items():
        (d / f"seed_{seed}").mkdir()
        lines = [json.dumps({"step": 1000 * (i + 1), "normalized_score": v, "loss": 0.1}) for i, v in enumerate(finals)]
        lines.insert(1, json.dumps({"step": 1500, "actor_loss": 1.0}))  # a train record without a score
        (d / f"seed_{seed}" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_table_follows_f2(tmp_path):
    # Two tasks, three seeds; per-seed means across tasks: (10+30)/2, (20+40)/2, (30+50)/2 = 20, 30, 40.
    _write_run(tmp_path, "a", {"task": "t1", "algorithm": "td3bc", "augmentation": "gta"},
               {0: [0, 10], 1: [0, 20], 2: [0, 30]})
    _write_run(tmp_path, "b", {"task": "t2", "algorithm": "td3bc", "augmentation": "gta"},
               {0: [0, 30], 1: [0, 40], 2: [0, 50]})
    results = S.load_results([tmp_path])
    table = S.score_table(results)
    assert table.cells[("td3bc", "gta", "t1")] == (20.0, 10.0, 3)
    m, s, n = table.average[("td3bc", "gta")]
    assert (m, s, n) == (30.0, 10.0, 3)
    md = table.to_markdown()
    assert "| td3bc | gta | 20.00 ± 10.00 | 40.00 ± 10.00 | 30.00 ± 10.00 |" in md
    assert "td3bc,gta,average,30,10,3" in table.to_csv()
    r = [x for x in results if x.task == "t1"][0]
    np.testing.assert_array_equal(r.curves[0][0], [1000, 2000])


def test_compare_methods_uses_per_seed_averages(tmp_path):
    _write_run(tmp_path, "g", {"task": "t", "algorithm": "iql", "augmentation": "gta"}, {k: [80 + k] for k in range(4)})
    _write_run(tmp_path, "s", {"task": "t", "algorithm": "iql", "augmentation": "synther"}, {k: [70 + 2 * k] for k in range(4)})
    tests = S.compare_methods(S.load_results([tmp_path / "g", tmp_path / "s"]), baseline="synther")
    avg = [t for t in tests if t["task"] == "average"][0]
    ref = sps.ttest_ind([80, 81, 82, 83], [70, 72, 74, 76], equal_var=False)
    assert avg["p_value"] == pytest.approx(ref.pvalue) and avg["method"] == "gta"
    with pytest.raises(EvalError, match="baseline method 'cql'"):
        S.compare_methods(S.load_results([tmp_path]), baseline="cql")


def test_score_files(tmp_path):
    (tmp_path / "s.csv").write_text("seed,normalized_score,task,method,algorithm\n0,50,hc,gta,td3bc\n1,52,hc,gta,td3bc\n")
    (tmp_path / "a.json").write_text(json.dumps({"task": "hc", "method": "none", "algorithm": "td3bc",
                                                 "scores": {"seed_0": 47.0, "seed_1": 49.0}}))
    (tmp_path / "l.json").write_text(json.dumps([{"seed": 3, "normalized_score": 1.0}, {"seed": 4, "normalized_score": 3.0}]))
    res = {(r.task, r.method): r for r in S.load_results([tmp_path / "s.csv", tmp_path / "a.json", tmp_path / "l.json"])}
    assert res[("hc", "gta")].scores == {0: 50.0, 1: 52.0}
    assert res[("hc", "none")].scores == {0: 47.0, 1: 49.0}
    assert res[("l", "none")].scores == {3: 1.0, 4: 3.0}


def test_reader_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="has no results"):
        S.load_results([tmp_path / "empty"])
    d = tmp_path / "run"
    (d / "seed_0").mkdir(parents=True)
    (d / "seed_0" / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\n')
    with pytest.raises(EvalError, match="has no results"):
        S.load_results([d])
    (d / "seed_0" / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(EvalError, match="metrics.jsonl:1 is not valid JSON"):
        S.load_results([d])
    (tmp_path / "x.csv").write_text("seed,score\n0,1\n")
    with pytest.raises(EvalError, match="normalized_score"):
        S.load_results([tmp_path / "x.csv"])
    with pytest.raises(EvalError, match="does not exist"):
        S.load_results([tmp_path / "nope"])


def test_sensitivity_grid(tmp_path):
    for mu in (0.25, 0.5):
        for alpha in (1.1, 1.3):
            _write_run(tmp_path, f"r{mu}_{alpha}", {"task": "hc", "algorithm": "td3bc", "augmentation": "gta",
                                                   "augmentation_config": {"mu": mu, "alpha": alpha}},
                       {0: [100 * mu + alpha], 1: [100 * mu + alpha + 2]})
    grids = S.sensitivity_grid(S.load_results([tmp_path]))
    mus, alphas, grid = grids[("hc", "td3bc", "gta")]
    assert mus == [0.25, 0.5] and alphas == [1.1, 1.3]
    np.testing.assert_allclose(grid, [[27.1, 27.3], [52.1, 52.3]])  # mean of x and x + 2


def test_runs_with_recorded_settings_stay_in_the_table(tmp_path):
    # A GTA run that records its (mu, alpha) next to a baseline without them: both are table rows.
    _write_run(tmp_path, "none", {"task": "hc", "algorithm": "td3bc"}, {0: [40.0], 1: [42.0]})
    _write_run(tmp_path, "gta", {"task": "hc", "algorithm": "td3bc", "augmentation": "gta", "mu": 0.5, "alpha": 1.3},
               {0: [50.0], 1: [54.0]})
    results = S.load_results([tmp_path])
    table = S.score_table(results)
    assert set(table.rows) == {("td3bc", "none"), ("td3bc", "gta")} and table.sweeps == []
    assert table.cells[("td3bc", "gta", "hc")][0] == 52.0
    assert [t["method"] for t in S.compare_methods(results) if t["task"] == "average"] == ["gta"]


def test_sweeps_are_left_out_of_the_table_and_named(tmp_path):
    _write_run(tmp_path, "none", {"task": "hc", "algorithm": "td3bc"}, {0: [40.0], 1: [42.0]})
    for mu in (0.25, 0.5):
        _write_run(tmp_path, f"gta{mu}", {"task": "hc", "algorithm": "td3bc", "augmentation": "gta", "mu": mu,
                                         "alpha": 1.3}, {0: [50.0 + mu], 1: [54.0]})
    table = S.score_table(S.load_results([tmp_path]))
    assert table.rows == [("td3bc", "none")] and table.sweeps == [("hc", "gta", "td3bc", 2)]
    # ... unless exactly one run of the configuration records no setting: that one is the table's.
    _write_run(tmp_path, "gta_main", {"task": "hc", "algorithm": "td3bc", "augmentation": "gta"}, {0: [60.0], 1: [62.0]})
    table = S.score_table(S.load_results([tmp_path]))
    assert table.cells[("td3bc", "gta", "hc")][0] == 61.0 and table.sweeps == []


def test_gta_rl_runs_are_labelled_by_their_stores(tmp_path):
    from gta_data import Transitions, write_store

    rng = np.random.default_rng(0)
    n = 20
    tr = Transitions(observations=rng.normal(size=(n, 3)).astype(np.float32), actions=np.zeros((n, 1), np.float32),
                     rewards=np.zeros(n, np.float32), next_observations=rng.normal(size=(n, 3)).astype(np.float32),
                     terminals=np.zeros(n, bool), timeouts=np.arange(n) == n - 1)
    stores = {}
    for name, prov in (("medium", {"d4rl_name": "hopper-medium"}), ("replay", {"d4rl_name": "hopper-medium-replay"}),
                       ("gta", {"method": "GTA", "augment": {"mu": 0.5, "alpha": 1.3},
                                "source_store": str(tmp_path / "medium.zarr")})):
        stores[name] = str(write_store(tmp_path / f"{name}.zarr", tr, np.array([n]), env_id="Hopper-v5",
                                       provenance=prov).path)
    # Same env, same seeds: two datasets are two tasks, not one (their seeds would collide).
    for name, data in (("a", [stores["medium"]]), ("b", [stores["replay"]]), ("c", [stores["medium"], stores["gta"]])):
        _write_run(tmp_path, name, {"algorithm": "td3bc", "env_id": "Hopper-v5", "data": data}, {0: [1.0], 1: [2.0]})
    labels = {(r.task, r.method, r.mu, r.alpha) for r in S.load_results([tmp_path])}
    assert labels == {("hopper-medium", "none", None, None), ("hopper-medium-replay", "none", None, None),
                      ("hopper-medium", "GTA", 0.5, 1.3)}
    # Trained on the augmented store alone: still GTA on its source's dataset.
    assert S._store_labels([stores["gta"]]) == {"task": "hopper-medium", "method": "GTA", "mu": 0.5, "alpha": 1.3}


def test_unfinished_gta_rl_runs_are_not_final_results(tmp_path):
    run = _write_run(tmp_path, "r", {"algorithm": "td3bc", "env_id": "E", "data": ["x.zarr"], "seeds": [0, 1],
                                     "steps": 100000}, {0: [1.0, 2.0], 1: [3.0, 4.0]})
    with pytest.raises(EvalError, match=r"unfinished gta-rl run \(2 of 2 seeds evaluated, last at step 2000 of 100000"):
        S.load_results([run])
    assert S.load_results([run], allow_unfinished=True)[0].scores == {0: 2.0, 1: 4.0}
    (run / "results.json").write_text(json.dumps({"step": 50000}))  # written before the run was extended
    with pytest.raises(EvalError, match="unfinished"):
        S.load_results([run])
    (run / "results.json").write_text(json.dumps({"step": 100000}))
    assert S.load_results([run])[0].scores == {0: 2.0, 1: 4.0}
    (run / "seed_1" / "metrics.jsonl").unlink()  # a seed without evaluations
    with pytest.raises(EvalError, match="1 of 2 seeds evaluated"):
        S.load_results([run])


def test_score_files_with_non_numbers_are_one_line_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("seed,normalized_score\n0,fifty\n")
    with pytest.raises(EvalError, match="not a number"):
        S.load_results([tmp_path / "bad.csv"])
    (tmp_path / "bad.json").write_text(json.dumps({"seed_0": "x"}))
    with pytest.raises(EvalError, match="not a number"):
        S.load_results([tmp_path / "bad.json"])


def test_quality_refuses_bad_counts_before_any_work(tmp_path):
    from gta_eval.quality import evaluate_quality

    for kw, message in (({"segments": -1}, "segments >= 0"), ({"seed": -1}, "seed must be in"),
                        ({"samples": 0}, "samples must be >= 1")):
        with pytest.raises(EvalError, match=message):
            evaluate_quality(str(tmp_path / "none.zarr"), str(tmp_path / "none.zarr"), **kw)
