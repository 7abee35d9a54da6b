"""D4RL maze2d-style PointMaze datasets (umaze, medium, large), as D4RL and Minari generated them.

A Q-iteration planner on the maze grid gives the sequence of cells to the goal; a PD controller
(P = 10, D = -1) drives the point through the waypoints (cell centres, then the goal itself; a
waypoint counts as reached within 0.1 at speed below 0.1), Gaussian noise with std 0.5 is added to
every action, which is then clipped to [-1, 1] (D4RL ``waypoint_controller.py`` and
``generate_maze2d_datasets.py``; Minari's ``D4RL/pointmaze/*-v2`` recipe). The environment is
gymnasium-robotics ``PointMaze_*-v3`` with ``continuing_task=True``, sparse reward (1 within 0.45 of the
goal), episodes truncated at 300 / 600 / 800 steps. As in D4RL, a new goal is drawn only once the
controller has *solved* the current one (within 0.1 of it and nearly still), so the agent collects reward
while it settles on a goal; the new goal is drawn between two steps and appears in the observation of
the step it applies to (gymnasium-robotics' own ``reset_target`` would instead move the goal as soon as
it is touched, giving one rewarded step per goal, unlike D4RL).
Observations are flattened to ``observation`` (x, y, vx, vy) + ``desired_goal`` (gx, gy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gta_data.recipes.random_policy import rollout_episodes
from gta_data.recipes.recipe import Recipe
from gta_data.scores import D4RL_REFERENCE_SCORES
from gta_data.simulators import make_env

MAZES = {
    # recipe name -> (gymnasium-robotics env id, D4RL family, episode length)
    "pointmaze-umaze": ("PointMaze_UMaze-v3", "maze2d-umaze", 300),
    "pointmaze-medium": ("PointMaze_Medium-v3", "maze2d-medium", 600),
    "pointmaze-large": ("PointMaze_Large-v3", "maze2d-large", 800),
}
P_GAIN, D_GAIN, ACTION_NOISE = 10.0, -1.0, 0.5
SOLVE_THRESH, VEL_THRESH = 0.1, 0.1
GOAL_RADIUS = 0.45  # gymnasium-robotics sparse reward and goal re-draw radius


def q_iteration(free: np.ndarray, goal: tuple[int, int], gamma: float = 0.99, iters: int = 500) -> np.ndarray:
    """Value of every free cell for reaching ``goal`` (reward 1 on arrival, discount gamma), by value
    iteration over the 4-connected grid (D4RL ``q_iteration.py``). Walls get -inf."""
    value = np.where(free, 0.0, -np.inf)
    for _ in range(iters):
        padded = np.pad(value, 1, constant_values=-np.inf)
        neigh = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        new = np.where(free, gamma * neigh.max(axis=0), -np.inf)
        new[goal] = 1.0
        if np.array_equal(new, value):
            break
        value = new
    return value


class WaypointController:
    """PD control through the cells of the planner's greedy path (D4RL ``WaypointController``)."""

    def __init__(self, maze) -> None:
        self.maze = maze
        self.free = np.asarray(maze.maze_map) != 1
        self._goal_xy: np.ndarray | None = None
        self._waypoints: list[np.ndarray] = []
        self._idx = 0
        self._prev_loc = np.zeros(2)
        self.solved = False

    def _plan(self, location: np.ndarray, goal_xy: np.ndarray) -> None:
        goal_cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(goal_xy))
        value = q_iteration(self.free, goal_cell)
        cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(location))
        path = []
        for _ in range(self.free.size):
            if cell == goal_cell:
                break
            r, c = cell
            moves = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
            cell = max(moves, key=lambda rc: value[rc])
            path.append(cell)
        self._waypoints = [np.asarray(self.maze.cell_rowcol_to_xy(np.array(rc)), dtype=np.float64) for rc in path]
        # The final waypoint is the goal itself, not its cell centre.
        if self._waypoints:
            self._waypoints[-1] = goal_xy.copy()
        else:
            self._waypoints = [goal_xy.copy()]
        self._goal_xy = goal_xy.copy()
        self._idx = 0

    def reset(self) -> None:
        self._goal_xy = None
        self.solved = False

    def __call__(self, location: np.ndarray, velocity: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        if self._goal_xy is None or np.linalg.norm(goal_xy - self._goal_xy) > 1e-3:
            self._plan(location, goal_xy)
            self._prev_loc = location.copy()
        waypoint = self._waypoints[self._idx]
        action = P_GAIN * (waypoint - location) + D_GAIN * velocity
        moved = np.linalg.norm(self._prev_loc - location)
        self.solved = bool(np.linalg.norm(location - goal_xy) < SOLVE_THRESH and moved < VEL_THRESH)
        if (np.linalg.norm(location - waypoint) < SOLVE_THRESH and moved < VEL_THRESH
                and self._idx < len(self._waypoints) - 1):
            self._idx += 1
        self._prev_loc = location.copy()
        return np.clip(action, -1.0, 1.0)


def _builder(env_id: str, family: str, episode_steps: int):
    def build(size: int, seed: int, options: dict[str, Any]):
        noise = float(options.get("action_noise", ACTION_NOISE))
        env = make_env(env_id, continuing_task=True, reset_target=False, max_episode_steps=episode_steps)
        maze_env = env.unwrapped
        controller = WaypointController(maze_env.maze)
        rng = np.random.default_rng(seed)

        def new_goal_if_solved(raw):
            # D4RL: once the controller reports the goal solved, the target moves (env.set_target()).
            if not controller.solved:
                return raw
            old = maze_env.goal.copy()
            while np.linalg.norm(maze_env.goal - old) <= GOAL_RADIUS:
                maze_env.goal = maze_env.add_xy_position_noise(maze_env.generate_target_goal())
            maze_env.update_target_site_pos()
            controller.solved = False
            return {**raw, "desired_goal": maze_env.goal.copy()}

        def policy(_flat, raw):
            obs = np.asarray(raw["observation"], dtype=np.float64)
            action = controller(obs[:2], obs[2:4], np.asarray(raw["desired_goal"], dtype=np.float64))
            return np.clip(action + noise * rng.standard_normal(2), -1.0, 1.0).astype(np.float32)

        lo, hi = D4RL_REFERENCE_SCORES[family]
        meta = {
            "env_id": env_id,
            "obs_dim": 6,
            "act_dim": 2,
            "ref_min_score": lo,
            "ref_max_score": hi,
            "observation_layout": [
                {"key": "observation", "start": 0, "stop": 4},
                {"key": "desired_goal", "start": 4, "stop": 6},
            ],
            "attrs": {"env_kwargs": {"continuing_task": True, "reset_target": False,
                                     "max_episode_steps": episode_steps}},
            "provenance": {"policy": "Q-iteration waypoints + PD controller (P=10, D=-1)",
                           "action_noise": noise, "d4rl_name": family},
        }
        episodes = rollout_episodes(env, policy, size, seed, obs_keys=["observation", "desired_goal"],
                                    on_reset=controller.reset, on_step_start=new_goal_if_solved)
        return episodes, meta

    return build


RECIPES = [
    Recipe(name, f"D4RL {family}-style data in {env_id} (waypoint PD controller, noise 0.5)", 1_000_000,
           _builder(env_id, family, steps), options=("action_noise",))
    for name, (env_id, family, steps) in MAZES.items()
]
