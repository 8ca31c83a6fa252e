"""``--set name=value`` tracker settings on the command line of the evaluation tools."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from iphd.errors import ConfigError
from iphd.tracking.tracker import TrackerConfig


def parse_settings(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["name=v1,v2", ...]`` -> ``{name: [values]}``, typed as the TrackerConfig field.

    Raises:
        ConfigError: not ``name=values``, an unknown name or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(TrackerConfig)}
    defaults = TrackerConfig()
    out: dict[str, list[Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not text.strip():
            raise ConfigError(f"--set takes name=value[,value...], got {item!r}")
        if name not in fields:
            raise ConfigError(
                f"--set: {name!r} is not a tracker setting; the settings are "
                f"{', '.join(sorted(fields))}"
            )
        kind = type(getattr(defaults, name))
        values: list[Any] = []
        for raw in text.split(","):
            raw = raw.strip()
            try:
                if kind is bool:
                    if raw.lower() not in ("true", "false"):
                        raise ValueError(raw)
                    values.append(raw.lower() == "true")
                else:
                    values.append(kind(raw))
            except ValueError:
                raise ConfigError(
                    f"--set {name}: {raw!r} is not a {kind.__name__} (default "
                    f"{getattr(defaults, name)!r})"
                ) from None
        out[name] = values
    return out


def tracker_config(items: Sequence[str], base: TrackerConfig | None = None) -> TrackerConfig:
    """``base`` (the defaults when None) with one value per ``name=value`` of ``items``.

    Raises:
        ConfigError: what :func:`parse_settings` refuses, several values for one setting (a
            run takes one; ``training/tune_tracker.py`` tries several), or a value the tracker
            cannot run with.
    """
    settings = parse_settings(items)
    several = [f"{name}={','.join(map(str, v))}" for name, v in settings.items() if len(v) > 1]
    if several:
        raise ConfigError(
            f"--set {several[0]}: one value per setting here; training/tune_tracker.py tries "
            "several"
        )
    overrides = {name: values[0] for name, values in settings.items()}
    try:
        return dataclasses.replace(base or TrackerConfig(), **overrides)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from exc
