"""Registry of the offline RL algorithms of GTA's Tables 1 and 2, their configs and per-family presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from gta_rl.cql import CQL, CQLConfig
from gta_rl.cql import PRESETS as CQL_PRESETS
from gta_rl.dt import DT, DT_PRESETS, DTConfig
from gta_rl.iql import IQL, IQLConfig
from gta_rl.iql import PRESETS as IQL_PRESETS
from gta_rl.mcq import MCQ, MCQConfig
from gta_rl.mcq import PRESETS as MCQ_PRESETS
from gta_rl.nets import Arithmetic
from gta_rl.td3bc import PRESETS as TD3BC_PRESETS
from gta_rl.td3bc import TD3BC, TD3BCConfig

if TYPE_CHECKING:
    from gta_rl.config import ResolvedRun


class ConfigError(ValueError):
    """A bad algorithm name, preset or override (one-line message)."""


@dataclass(frozen=True)
class AlgorithmSpec:
    agent: type
    config: type
    presets: dict[str, dict]


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "td3bc": AlgorithmSpec(TD3BC, TD3BCConfig, TD3BC_PRESETS),
    "iql": AlgorithmSpec(IQL, IQLConfig, IQL_PRESETS),
    "cql": AlgorithmSpec(CQL, CQLConfig, CQL_PRESETS),
    "mcq": AlgorithmSpec(MCQ, MCQConfig, MCQ_PRESETS),
    "dt": AlgorithmSpec(DT, DTConfig, DT_PRESETS),
}


def get_spec(name: str) -> AlgorithmSpec:
    key = name.lower().replace("+", "").replace("-", "").replace("_", "")
    if key not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r} (known: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[key]


def canonical_name(name: str) -> str:
    spec = get_spec(name)
    return next(k for k, v in ALGORITHMS.items() if v is spec)


def match_preset(name: str, dataset_name: str) -> str | None:
    """The first preset whose key occurs in the (lower-cased) dataset name, e.g. 'hopper-medium-expert'
    in 'mujoco/hopper/medium-expert-v0' after separators are normalised; None if none matches."""
    text = dataset_name.lower().replace("/", "-").replace("_", "-")
    for key in get_spec(name).presets:
        if key in text:
            return key
    return None


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with a JSON value (bare words are strings): 'beta=6', 'hidden=[64,64]'."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def build_config(name: str, preset: str | None = None, overrides: dict[str, Any] | None = None, *,
                 check_ranges: bool = True):
    """Defaults <- preset <- overrides; unknown keys and presets are errors. ``check_ranges=False`` for a
    run's saved settings: a run started before a range check existed still loads (types are checked)."""
    spec = get_spec(name)
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in spec.presets:
            raise ConfigError(f"unknown preset {preset!r} for {name} (known: {', '.join(spec.presets) or 'none'})")
        values.update(spec.presets[preset])
    values.update(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(spec.config)}
    defaults = spec.config()
    for key, value in list(values.items()):
        if key not in fields:
            raise ConfigError(f"{name} has no setting {key!r} (known: {', '.join(fields)})")
        if isinstance(value, list):
            values[key] = value = tuple(value)
        values[key] = _checked(name, key, value, getattr(defaults, key), check_ranges)
    return spec.config(**values)


_POSITIVE_INTS = ("policy_freq", "n_actions", "num_sampled_actions", "embedding_dim", "num_layers", "num_heads",
                  "context", "episode_len")


def _range_error(key: str, value: Any) -> str | None:
    """What a setting with a known meaning must be, where ``value`` is not that; None when it is (or when the
    setting has no such rule: biases, clips and scales may be negative)."""
    if key == "lr" or key.endswith("_lr"):
        return None if 0 <= value < math.inf else "a learning rate >= 0"
    if key == "discount":
        return None if 0 <= value <= 1 else "in [0, 1]"
    if key == "tau":
        return None if 0 < value <= 1 else "in (0, 1]"
    if key == "expectile":
        return None if 0 < value < 1 else "in (0, 1)"
    if key.endswith("dropout"):
        return None if 0 <= value < 1 else "a dropout probability in [0, 1)"
    if key in _POSITIVE_INTS:
        return None if value >= 1 else "a positive integer"
    if key in ("warmup_steps", "weight_decay"):
        return None if value >= 0 else ">= 0"
    return None


def _checked(algo: str, key: str, value: Any, default: Any, check_ranges: bool = True) -> Any:
    """``value`` of the type of the setting's default (an int where a float is expected is a float), and in
    range for the settings whose meaning has one (learning rates, discounts, Polyak rates, expectiles,
    dropouts, counts: :func:`_range_error`); a one-line ConfigError otherwise, before anything runs."""
    def bad(want: str) -> ConfigError:
        return ConfigError(f"{algo} setting {key}={value!r} is not {want}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        value = float(value)
        if math.isnan(value):
            raise bad("a number")
    elif isinstance(default, tuple):
        if not isinstance(value, tuple) or any(isinstance(v, bool) for v in value):
            raise bad("a list")
        if default and all(isinstance(v, int) for v in default):  # layer widths
            if not all(isinstance(v, int) and v > 0 for v in value):
                raise bad("a list of positive integers")
        elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
            raise bad("a list of numbers")
        else:
            value = tuple(float(v) for v in value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    if check_ranges and isinstance(value, (int, float)) and not isinstance(value, bool):
        if want := _range_error(key, value):
            raise bad(want)
    return value


def config_to_dict(config) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def build_agent(run: ResolvedRun, device: torch.device):
    """The stacked agent a run describes (``config.json``: algorithm, its config, dims, seeds), with the run's
    arithmetic chosen at construction: bf16 matmuls for ``bf16``, the Triton kernels for ``fused_mlp`` on
    CUDA (CPU copies, e.g. evaluation workers, keep the ordinary path)."""
    spec = get_spec(run.algorithm)
    algo_cfg = build_config(run.algorithm, None, run.algorithm_config, check_ranges=False)
    arithmetic = Arithmetic.of(run.config.bf16, run.config.fused_mlp and device.type == "cuda")
    return spec.agent(algo_cfg, run.obs_dim, run.act_dim, list(run.seeds), max_action=run.max_action,
                      device=device, total_steps=run.config.steps, arithmetic=arithmetic)
