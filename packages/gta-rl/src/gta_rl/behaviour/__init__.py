"""Behaviour policies of the D4RL-style locomotion datasets: online Soft Actor-Critic and what gta-data's recipes
take from its runs (docs/datasets.md). This is tooling for making datasets, beside gta-rl's offline algorithms,
not one of them: it shares their stacked networks, Adam, random streams and checkpoints, and gta-data's
execution layer.

D4RL's locomotion data come from SAC agents (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and
Applications"): "medium" is the actor early-stopped at about 1/3 of the expert's return, "medium-replay"
the replay buffer up to that point, "expert" the trained actor. A run (:func:`train_sac`, ``gta-rl sac``)
trains such an agent in a gymnasium vector env and keeps what those datasets need:

- the actor at every checkpoint with its evaluation return (``actors/step_<k>.safetensors``,
  ``checkpoints.jsonl``), converted by :func:`export_policy_file` to gta-data's numpy policy file;
- every transition in insertion order (the buffer never overwrites: capacity = total steps), so the first
  K rows are exactly what the agent had seen at step K (:func:`export_replay` writes them as a store);
- the simulator state (qpos, qvel) at the start of every episode, so that :func:`export_replay_file` can
  keep those K rows as actions + initial states (a few MB, gta-data's replay file) from which gta-data
  re-simulates them exactly;
- small resumable files (networks, optimizers, counters, the recorded actions) from which a resume rebuilds
  the buffer by re-simulation and continues the run bit for bit (``training``).

Modules: ``config`` (SACConfig, the run directory's names), ``agent`` (losses), ``replay`` (buffer and episode
starts), ``training`` (the loop), ``export`` (checkpoint picking, policy and replay files).
"""

from gta_rl.behaviour.agent import SACAgent
from gta_rl.behaviour.config import STATE, SACConfig, SACError
from gta_rl.behaviour.export import (
    export_policy_file,
    export_replay,
    export_replay_file,
    pick_checkpoints,
    read_checkpoints,
    replay_episodes,
)
from gta_rl.behaviour.replay import EpisodeStarts, ReplayBuffer
from gta_rl.behaviour.training import train_sac, update_runner

__all__ = ["STATE", "EpisodeStarts", "ReplayBuffer", "SACAgent", "SACConfig", "SACError", "export_policy_file",
           "export_replay", "export_replay_file", "pick_checkpoints", "read_checkpoints", "replay_episodes",
           "train_sac", "update_runner"]
