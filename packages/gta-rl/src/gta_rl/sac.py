"""The behaviour-policy tooling under its former name: ``gta_rl.sac`` is :mod:`gta_rl.behaviour` (online SAC and
its exports for gta-data's locomotion recipes), kept for the scripts and documents that import it from here."""

from gta_rl.behaviour import (
    STATE,
    EpisodeStarts,
    ReplayBuffer,
    SACAgent,
    SACConfig,
    SACError,
    export_policy_file,
    export_replay,
    export_replay_file,
    pick_checkpoints,
    read_checkpoints,
    replay_episodes,
    train_sac,
    update_runner,
)

__all__ = ["STATE", "EpisodeStarts", "ReplayBuffer", "SACAgent", "SACConfig", "SACError", "export_policy_file",
           "export_replay", "export_replay_file", "pick_checkpoints", "read_checkpoints", "replay_episodes",
           "train_sac", "update_runner"]
