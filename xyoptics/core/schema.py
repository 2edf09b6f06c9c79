"""Validated settings: a strict pydantic base and YAML loading whose errors name every bad field.

Every configuration in xyoptics (training configs, rig files, layouts, device specs, study configs) derives from
``Strict``: unknown keys are errors, so a typo never silently falls back to a default, and a model is frozen once
validated.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the offending field."""


def describe(err: ValidationError) -> str:
    """One line per problem: 'field.path: message'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_yaml_model(path: str | Path, model: type[BaseModel], what: str = "config"):
    """Read a YAML mapping and validate it as ``model``; raises ConfigError naming every bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what} {path}:\n{describe(exc)}") from None
