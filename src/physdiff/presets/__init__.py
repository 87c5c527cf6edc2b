"""The experiments' presets as data: ``<experiment>-<preset>.yaml`` files in this folder.

Read by :func:`physdiff.experiments.config.preset_config`; this module only finds them (it imports
nothing heavy, so the command line can list the experiments quickly).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRESETS", "preset_dir", "experiments", "preset_path"]

PRESETS: tuple[str, ...] = ("quick", "paper")


def preset_dir() -> Path:
    return Path(__file__).resolve().parent


def experiments() -> tuple[str, ...]:
    """The experiments that have presets (one name list, taken from the preset files)."""
    return tuple(sorted({p.stem.rsplit("-", 1)[0] for p in preset_dir().glob("*.yaml")}))


def preset_path(experiment: str, preset: str = "quick") -> Path:
    """The YAML file of a preset; ``ValueError`` names the valid experiments and presets."""
    if experiment not in experiments():
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(experiments())}")
    path = preset_dir() / f"{experiment}-{preset}.yaml"
    if not path.is_file():
        have = sorted(p.stem.rsplit("-", 1)[1] for p in preset_dir().glob(f"{experiment}-*.yaml"))
        raise ValueError(f"experiment {experiment!r} has no preset {preset!r}; choose one of {have}")
    return path
