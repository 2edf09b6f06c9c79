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


def _where(text: str, pos: int) -> str:
    """'line L, column C' (1-based) of the character at index ``pos``."""
    line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """A YAML error in ``text`` as one line: what is wrong and where (line and column, 1-based)."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return f"character #x{ord(char):04x} at {_where(text, exc.position)}: {exc.reason}"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark, ctx = exc.problem_mark, exc.context_mark
        msg = exc.problem + (f" at {_where(text, mark.index)}" if mark else "")
        if exc.context:
            msg += f" ({exc.context}" + (f" at {_where(text, ctx.index)}" if ctx else "") + ")"
        return " ".join(msg.split())
    return " ".join(str(exc).split())


def _kind(raw) -> str:
    if raw is None:
        return "an empty document"
    return {list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}.get(
        type(raw), f"a {type(raw).__name__}")


def load_yaml_model(path: str | Path, model: type[BaseModel], what: str = "config"):
    """Read a UTF-8 YAML mapping and validate it as ``model``; raises ConfigError, whose first line says what is
    wrong (unreadable, not UTF-8 text, not YAML, not a mapping) and, for invalid settings, names every bad field."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a leading BOM is dropped
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {what} {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); a {what} is a YAML text file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc, text)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} is a mapping of settings (key: value lines) at the top level, "
                          f"got {_kind(raw)}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what} {path}:\n{describe(exc)}") from None
