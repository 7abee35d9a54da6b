import numpy as np
import pytest

from gta_data import StoreError, normalized_score, reference_scores, write_store
from gta_data.scores import env_family


@pytest.mark.parametrize("name, family", [
    ("HalfCheetah-v5", "halfcheetah"), ("mujoco/halfcheetah/medium-v0", "halfcheetah"),
    ("halfcheetah-medium-v2", "halfcheetah"), ("Hopper-v5", "hopper"), ("Walker2d-v5", "walker2d"),
    ("Ant-v5", "ant"), ("PointMaze_UMaze-v3", "maze2d-umaze"), ("D4RL/pointmaze/medium-v2", "maze2d-medium"),
    ("maze2d-large-v1", "maze2d-large"), ("CartPole-v1", None),
    ("AntMaze_UMaze-v5", "antmaze"), ("antmaze-umaze-v2", "antmaze"), ("D4RL/antmaze/large-diverse-v1", "antmaze"),
    ("PointMaze_UMazeDense-v3", "maze2d-umaze-dense"), ("D4RL/pointmaze/medium-dense-v2", "maze2d-medium-dense"),
    ("maze2d-large-dense-v1", "maze2d-large-dense"), ("PointMaze_LargeDense-v3", "maze2d-large-dense"),
])
def test_families(name, family):
    assert env_family(name) == family


def test_normalized_score_d4rl_table():
    assert normalized_score("HalfCheetah-v5", -280.178953) == pytest.approx(0.0)
    assert normalized_score("HalfCheetah-v5", 12135.0) == pytest.approx(100.0)
    # hopper-medium returns around 1,600 give about 49.5 (D4RL paper's behaviour score range).
    assert normalized_score("Hopper-v5", 1600.0) == pytest.approx(100 * (1600 + 20.272305) / (3234.3 + 20.272305))
    np.testing.assert_allclose(normalized_score("Walker2d-v5", np.array([1.629008, 4592.3])), [0, 100])
    # AntMaze scores are success rates; dense mazes have their own D4RL references.
    assert normalized_score("AntMaze_Medium-v5", 0.5) == pytest.approx(50.0)
    assert normalized_score("PointMaze_UMazeDense-v3", 193.66285642381482) == pytest.approx(100.0)
    with pytest.raises(StoreError, match="no reference scores"):
        reference_scores("CartPole-v1")


def test_store_scores_take_precedence(tmp_path, transitions):
    store = write_store(tmp_path / "s.zarr", transitions, np.array([100]), env_id="HalfCheetah-v5",
                        ref_min_score=0.0, ref_max_score=10.0)
    assert normalized_score(store, 5.0) == pytest.approx(50.0)
    assert normalized_score(str(tmp_path / "s.zarr"), 10.0) == pytest.approx(100.0)
    plain = write_store(tmp_path / "p.zarr", transitions, np.array([100]), env_id="Hopper-v5")
    assert reference_scores(plain) == reference_scores("Hopper-v5")
