"""D4RL-style MuJoCo locomotion datasets (halfcheetah, hopper, walker2d), made locally (docs/datasets.md).

D4RL (Fu et al., 2020, section 5 and appendix) defined the datasets of GTA's Table 1 as:

- ``random``: 1M steps of a random policy: in D4RL v2 (and here) the SAC actor at its random initialisation,
  sampled (``gta_data.recipes.initial_policy``); ``random-uniform`` is the other convention, uniform actions
  (D4RL v0's random data, Minari's ``mujoco/*/random``);
- ``medium``: 1M steps of a SAC policy early-stopped at about 1/3 of the expert's return, stochastic
  actions;
- ``medium-replay``: every transition the SAC agent saw in its replay buffer until it reached medium;
- ``expert``: 1M steps of the fully trained SAC policy, stochastic actions;
- ``medium-expert``: the medium and the expert data concatenated (here: ``size // 2`` medium steps then
  the rest expert, with the same seed, so it equals the two recipes' stores appended).

Policies come from ``<policy dir>/<env>.npz`` (``gta_data.policies``; actors "medium" and "expert"), the
replay data from ``<policy dir>/<env>-medium-replay.npz``: the first K transitions of the SAC run that
trained the policies, K = the step of its medium checkpoint, cut into episodes per vector-env copy and kept
as each episode's initial simulator state and actions (``gta_data.replay``); the recipe re-simulates them
and records in the store's provenance (``replay_check``) how exactly the recorded returns and last
observations were reproduced. Both files are written by ``tools/train_behaviour_policies.py``. Episode i
starts from env seed ``seed + i``; the action noise comes from ``numpy.random.default_rng([seed, k])``
(k = 0 medium, 1 expert, 3 random), the random policy's initial weights from ``default_rng([seed, 2])`` (recorded
in the provenance), so a dataset is a function of its seed. The environments are gymnasium's v5
successors of D4RL's v2 ones; reference scores are D4RL's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.errors import RecipeError
from gta_data.policies import PolicyError, load_policy_file, policy_dir
from gta_data.recipes.initial_policy import HIDDEN, initial_actor
from gta_data.recipes.random_policy import rollout_episodes
from gta_data.recipes.recipe import Recipe
from gta_data.replay import ReplayCheck, ReplayError, load_replay_file, resimulate
from gta_data.scores import D4RL_REFERENCE_SCORES
from gta_data.simulators import make_env
from gta_data.store import Transitions

ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
KINDS = ("random", "random-uniform", "medium", "medium-replay", "expert", "medium-expert")
# Streams of numpy.random.default_rng([seed, k]): the action noise of each policy, the random policy's weights.
_NOISE_STREAM = {"medium": 0, "expert": 1, "random": 3}
_INIT_STREAM = 2


def _how_to_make(family: str) -> str:
    return f"make it with `python tools/train_behaviour_policies.py --env {family}` on a GPU"


def policy_path(family: str, options: dict[str, Any]) -> Path:
    return Path(options.get("policy_file") or policy_dir() / f"{family}.npz")


def replay_path(family: str, options: dict[str, Any]) -> Path:
    return Path(options.get("replay_file") or policy_dir() / f"{family}-medium-replay.npz")


def _load_actor(family: str, env_id: str, which: str, options: dict[str, Any]):
    path = policy_path(family, options)
    if not path.is_file():
        raise RecipeError(f"behaviour policy file {path} is missing: {_how_to_make(family)}")
    try:
        policies = load_policy_file(path)
    except PolicyError as exc:
        raise RecipeError(str(exc)) from None
    if policies.env_id != env_id:
        raise RecipeError(f"{path} holds policies for {policies.env_id}, not {env_id}")
    if which not in policies.actors:
        raise RecipeError(f"{path} has no {which!r} policy (has {', '.join(policies.actors)}): {_how_to_make(family)}")
    return policies.actors[which]


def _policy_episodes(env_id: str, actor, size: int, seed: int, which: str) -> Iterator[Transitions]:
    env = make_env(env_id)
    rng = np.random.default_rng([seed, _NOISE_STREAM[which]])
    return rollout_episodes(env, lambda flat, raw: actor.sample(flat[None], rng)[0], size, seed)


def _builder(family: str, kind: str):
    env_id = ENVS[family]

    def build(size: int, seed: int, options: dict[str, Any]):
        lo, hi = D4RL_REFERENCE_SCORES[family]
        provenance: dict[str, Any] = {"d4rl_name": f"{family}-{kind}"}
        if kind == "random":
            env = make_env(env_id)
            space = env.action_space
            actor = initial_actor(int(np.prod(env.observation_space.shape)), int(np.prod(space.shape)),
                                  np.random.default_rng([seed, _INIT_STREAM]), space.low, space.high)
            env.close()
            episodes = _policy_episodes(env_id, actor, size, seed, kind)
            provenance.update(policy="randomly initialised SAC actor (D4RL v2; rlkit's initialisation), stochastic",
                              policy_init={"hidden": list(HIDDEN), "weights_rng": [seed, _INIT_STREAM],
                                           "noise_rng": [seed, _NOISE_STREAM[kind]]})
        elif kind == "random-uniform":
            env = make_env(env_id)
            space = env.action_space
            space.seed(seed)
            episodes = rollout_episodes(env, lambda flat, raw: space.sample(), size, seed)
            provenance.update(policy="uniform random", d4rl_name=f"{family}-random")
        elif kind in ("medium", "expert"):
            actor = _load_actor(family, env_id, kind, options)
            episodes = _policy_episodes(env_id, actor, size, seed, kind)
            provenance.update(policy=f"SAC {kind} (stochastic)", policy_file=str(policy_path(family, options)),
                              policy_info=actor.info)
        elif kind == "medium-expert":
            medium = _load_actor(family, env_id, "medium", options)
            expert = _load_actor(family, env_id, "expert", options)
            half = size // 2

            def chained() -> Iterator[Transitions]:
                yield from _policy_episodes(env_id, medium, half, seed, "medium")
                yield from _policy_episodes(env_id, expert, size - half, seed, "expert")

            if half == 0:
                raise RecipeError("medium-expert needs a size of at least 2")
            episodes = chained()
            provenance.update(policy="SAC medium then SAC expert (stochastic)", medium_transitions=half,
                              policy_file=str(policy_path(family, options)),
                              policy_info={"medium": medium.info, "expert": expert.info})
        else:  # medium-replay
            path = replay_path(family, options)
            if not path.exists():
                raise RecipeError(f"medium-replay file {path} is missing: {_how_to_make(family)}")
            try:
                replay = load_replay_file(path)
            except ReplayError as exc:
                raise RecipeError(str(exc)) from None
            if replay.env_id != env_id:
                raise RecipeError(f"{path} holds data of {replay.env_id}, not {env_id}")
            # Filled while the episodes are re-simulated; the writer stores the provenance at commit.
            check = ReplayCheck()
            try:
                episodes = resimulate(make_env(env_id), replay, size, check)
            except ReplayError as exc:
                raise RecipeError(f"{path}: {exc}") from None
            provenance.update(policy="SAC replay buffer up to the medium checkpoint (re-simulated)",
                              replay_file=str(path), replay_provenance=replay.provenance,
                              replay_check=check.__dict__)
        # (Not named env: the random policy above samples from the seeded action space of its own env.)
        spec_env = make_env(env_id)
        meta = {
            "env_id": env_id,
            "obs_dim": int(np.prod(spec_env.observation_space.shape)),
            "act_dim": int(np.prod(spec_env.action_space.shape)),
            "ref_min_score": lo,
            "ref_max_score": hi,
            "provenance": provenance,
        }
        spec_env.close()
        return episodes, meta

    return build


def _default_size(kind: str) -> int:
    # medium-replay takes the whole recorded replay unless a smaller size is asked for.
    return {"medium-expert": 2_000_000, "medium-replay": 10_000_000}.get(kind, 1_000_000)


# The files each kind reads (the random kinds read none).
_OPTIONS = {"random": (), "random-uniform": (), "medium": ("policy_file",), "expert": ("policy_file",),
            "medium-expert": ("policy_file",), "medium-replay": ("replay_file",)}

_DESCRIPTIONS = {
    "random": "D4RL v2 {family}-random-style data in {env_id} (a randomly initialised SAC actor)",
    "random-uniform": "{family}-random with uniform actions instead (D4RL v0, Minari) in {env_id}",
    "medium-replay": "D4RL {family}-medium-replay-style data in {env_id} (the whole recorded replay unless --size)",
}

RECIPES = [
    Recipe(f"{family}-{kind}", _DESCRIPTIONS.get(kind, "D4RL {family}-{kind}-style data in {env_id}").format(
        family=family, kind=kind, env_id=env_id), _default_size(kind), _builder(family, kind),
        options=_OPTIONS[kind])
    for family, env_id in ENVS.items()
    for kind in KINDS
]
