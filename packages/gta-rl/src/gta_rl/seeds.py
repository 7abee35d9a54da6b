"""Seed lists from the command line: '0-7', '0,2,5', '3', '0-3,8'."""

from __future__ import annotations


class SeedSpecError(ValueError):
    pass


def parse_seeds(spec: str) -> list[int]:
    seeds: list[int] = []
    text = spec.strip()
    if not text:
        raise SeedSpecError("empty seed list")
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo_text, hi_text = part.split("-", 1) if not part.startswith("-") else ("", part)
                lo, hi = int(lo_text), int(hi_text)
                if hi < lo:
                    raise SeedSpecError(f"seed range {part!r} runs backwards")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError as exc:
            if isinstance(exc, SeedSpecError):
                raise
            raise SeedSpecError(f"bad seed list {spec!r}: {part!r} is not a seed or a range a-b") from None
    if any(s < 0 or s >= 2**31 for s in seeds):
        raise SeedSpecError(f"seeds must lie in [0, 2**31), got {spec!r}")
    if len(set(seeds)) != len(seeds):
        raise SeedSpecError(f"seed list {spec!r} repeats a seed")
    return seeds
