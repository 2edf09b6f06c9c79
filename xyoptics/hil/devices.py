"""slmsuite devices named in a rig file: class path plus keyword arguments, built safely.

A rig YAML names each device by import path, so any slmsuite vendor class works unmodified::

    slm:
      class: slmsuite.hardware.slms.simulated.SimulatedSLM
      kwargs: {resolution: [256, 256]}
    camera:
      class: slmsuite.hardware.cameras.simulated.SimulatedCamera
      kwargs: {slm: "@slm"}

A config file may only name classes under :data:`TRUSTED_MODULES` (or prefixes the caller adds
explicitly, e.g. from ``--trust``); the prefix is checked before anything is imported. A kwarg
value ``"@slm"`` is replaced by the already-built SLM object.
"""

from __future__ import annotations

import importlib
import logging
import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from ..core.schema import Strict

log = logging.getLogger(__name__)

TRUSTED_MODULES = ("slmsuite.hardware.", "drivers.")

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class DeviceError(ValueError):
    """A device that cannot be resolved, built or used; the message names the role and class path."""


class DeviceSpec(Strict):
    """One device: ``class`` (dotted path "package.module.ClassName") and constructor ``kwargs``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cls: str = Field(alias="class", description='dotted path "package.module.ClassName"')
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cls")
    @classmethod
    def _dotted_path(cls, v: str) -> str:
        if not _DOTTED.match(v):
            raise ValueError(f'expected a dotted path "package.module.ClassName", got {v!r}')
        return v


def _quiet_slmsuite() -> None:
    """slmsuite logs INFO to stdout on every construction; raise its logger to WARNING if it exists."""
    if "slmsuite" in logging.Logger.manager.loggerDict:
        logging.getLogger("slmsuite").setLevel(logging.WARNING)


def _base_class(role: str) -> type:
    if role == "slm":
        from slmsuite.hardware.slms.slm import SLM
        base = SLM
    elif role == "camera":
        from slmsuite.hardware.cameras.camera import Camera
        base = Camera
    else:
        raise DeviceError(f"unknown device role {role!r} (expected 'slm' or 'camera')")
    _quiet_slmsuite()
    return base


def _prefixes(trusted: Iterable[str]) -> tuple[str, ...]:
    """Trusted prefixes, each ending in "." so "mytests" cannot admit "mytestsevil"."""
    extra = (trusted,) if isinstance(trusted, str) else tuple(trusted)
    return tuple(p if p.endswith(".") else p + "." for p in (*TRUSTED_MODULES, *extra) if p.strip("."))


def resolve_class(role: str, spec: DeviceSpec, trusted: Iterable[str] = ()) -> type:
    """Check trust (before importing), import the module, and return the class if it subclasses the role's base."""
    path = spec.cls
    module_name, _, class_name = path.rpartition(".")
    prefixes = _prefixes(trusted)
    if not (module_name + ".").startswith(prefixes):
        raise DeviceError(f"{role} {path}: module not trusted: add --trust {module_name} "
                          f"(trusted prefixes: {', '.join(prefixes)})")
    base = _base_class(role)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # vendor SDKs fail with ImportError, OSError (missing DLL), ...
        raise DeviceError(f"{role} {path}: cannot import {module_name}: {type(e).__name__}: {e}") from e
    obj = getattr(module, class_name, None)
    if obj is None:
        raise DeviceError(f"{role} {path}: no class {class_name} in module {module_name}")
    kind = "SLM" if role == "slm" else "Camera"
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise DeviceError(f"{role} {path}: not an slmsuite {kind} subclass")
    return obj


def _substitute(role: str, path: str, kwargs: dict, refs: dict[str, Any]) -> dict:
    """Replace "@name" string values by the referenced device; unknown references are errors."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("@"):
            name = value[1:]
            if name not in refs:
                known = ", ".join("@" + r for r in refs) or "none"
                raise DeviceError(f"{role} {path}: kwargs.{key}: unknown reference {value!r} (available: {known})")
            value = refs[name]
        out[key] = value
    return out


def _construct(role: str, spec: DeviceSpec, klass: type, refs: dict[str, Any]):
    kwargs = _substitute(role, spec.cls, spec.kwargs, refs)
    try:
        return klass(**kwargs)
    except Exception as e:
        raise DeviceError(f"{role} {spec.cls}: constructing {spec.cls} failed: {type(e).__name__}: {e}") from e


def _close_quietly(role: str, device) -> None:
    """Close a device; a failing close is logged, never raised, so the original exception wins."""
    try:
        device.close()
    except Exception:
        log.exception("closing %s %s failed", role, type(device).__name__)


@contextmanager
def open_devices(slm: DeviceSpec, camera: DeviceSpec, trusted: Iterable[str] = (),
                 refs: dict[str, Any] | None = None) -> Iterator[tuple]:
    """Build the SLM, then the camera (whose "@slm" kwargs get the SLM); yield ``(slm, camera)``.
    ``refs`` names further values both may reference (e.g. "@topology" for a simulated rig).

    Both classes are resolved (trust, import, base class) before either is constructed. On exit,
    on an error while building the camera, or on Ctrl-C, whatever was opened is closed.
    """
    slm_cls = resolve_class("slm", slm, trusted)
    cam_cls = resolve_class("camera", camera, trusted)
    opened: list[tuple[str, Any]] = []
    try:
        refs = dict(refs or {})
        slm_obj = _construct("slm", slm, slm_cls, refs)
        opened.append(("slm", slm_obj))
        cam_obj = _construct("camera", camera, cam_cls, {**refs, "slm": slm_obj})
        opened.append(("camera", cam_obj))
        yield slm_obj, cam_obj
    finally:
        for role, device in reversed(opened):
            _close_quietly(role, device)


def _floats(x) -> list[float] | None:
    return None if x is None else [float(v) for v in np.ravel(np.asarray(x, dtype=float))]


def _common(device) -> dict:
    klass = type(device)
    height, width = (int(n) for n in device.shape)
    return {"class": f"{klass.__module__}.{klass.__qualname__}", "name": str(device.name),
            "resolution": [width, height], "shape": [height, width], "bitdepth": int(device.bitdepth)}


def describe(slm, camera) -> dict:
    """Plain JSON-serialisable summary of an open SLM and camera."""
    return {
        "slm": {**_common(slm), "settle_time_s": float(slm.settle_time_s), "wav_um": float(slm.wav_um),
                "pitch_um": _floats(slm.pitch_um)},
        "camera": {**_common(camera), "exposure_bounds_s": _floats(getattr(camera, "exposure_bounds_s", None)),
                   "exposure_s": float(camera.get_exposure()),
                   "pitch_um": _floats(getattr(camera, "pitch_um", None))},
    }


def frame_summary(frame, bitdepth: int) -> dict:
    """Shape, dtype, min/max of a camera frame, and whether any pixel sits at 2**bitdepth - 1."""
    frame = np.asarray(frame)
    level = 2 ** int(bitdepth) - 1
    n_sat = int(np.count_nonzero(frame >= level))
    lo, hi = frame.min().item(), frame.max().item()
    return {"shape": [int(n) for n in frame.shape], "dtype": str(frame.dtype), "min": lo, "max": hi,
            "saturation_level": level, "saturated": n_sat > 0, "saturated_pixels": n_sat}


def check_rig_devices(slm_spec: DeviceSpec, camera_spec: DeviceSpec, trusted: Iterable[str] = (),
                      refs: dict[str, Any] | None = None) -> dict:
    """Open both devices, grab one frame, write a flat zero phase to the SLM, close; return a report.

    The report is :func:`describe` plus ``frame`` (see :func:`frame_summary`) and ``slm_zero_phase``
    (``{"ok": bool, "error": str | None}``; a failed write is reported, not raised).
    """
    with open_devices(slm_spec, camera_spec, trusted, refs) as (slm, camera):
        report = describe(slm, camera)
        try:
            frame = camera.get_image()
        except Exception as e:
            raise DeviceError(f"camera {camera_spec.cls}: get_image() failed: {type(e).__name__}: {e}") from e
        report["frame"] = frame_summary(frame, camera.bitdepth)
        try:
            slm.set_phase(np.zeros(slm.shape), settle=False)
            report["slm_zero_phase"] = {"ok": True, "error": None}
        except Exception as e:
            report["slm_zero_phase"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return report
