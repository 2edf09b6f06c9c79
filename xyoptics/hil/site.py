"""The site safety file: the laser power limit of the lab, kept outside every run folder.

A rig file travels with each run (``rig.yaml`` is copied into the run folder) and anyone can edit it, so it may
only lower the laser limit. The limit itself comes from a YAML file that belongs to the site:

```yaml
laser_max_power_mw: 100          # mW, every laser of the site
lasers:                          # optional, per VISA resource; each at most laser_max_power_mw
  "ASRL1::INSTR": 80
```

It is found by ``site_path``: an explicit path (``--site FILE``), else ``$XYOPTICS_SITE``, else
``$XDG_CONFIG_HOME/xyoptics/site.yaml`` (``~/.config/xyoptics/site.yaml`` when that variable is unset or not an
absolute path). An explicit or environment path that does not exist is an error; a missing default file means
the site has none, and then only a limit the laser reports itself allows it to run (``drivers/laser.py``).

>>> SiteConfig(laser_max_power_mw=100, lasers={"ASRL1::INSTR": 80}).laser_limit("ASRL1::INSTR")
80.0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, model_validator

from ..core.schema import ConfigError, Strict, load_yaml_model

ENV = "XYOPTICS_SITE"

# A power in mW: a number (not a string or a boolean), finite and above zero.
Milliwatts = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]


class SiteConfig(Strict):
    """The site's laser limits (mW): ``laser_max_power_mw`` for every laser, ``lasers`` lower ones by VISA
    resource name. ``path`` is the file it was read from (None when built in code)."""

    laser_max_power_mw: Milliwatts
    lasers: dict[str, Milliwatts] = Field(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _overrides_only_lower(self):
        above = {r: p for r, p in self.lasers.items() if p > self.laser_max_power_mw}
        if above:
            raise ValueError(f"lasers {above} exceed laser_max_power_mw {self.laser_max_power_mw}: a per-laser "
                             "limit may only lower the site's")
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    def laser_limit(self, resource: str) -> float:
        """The most the laser at VISA ``resource`` may emit here (mW)."""
        return self.lasers.get(resource, self.laser_max_power_mw)


def default_site_path() -> Path:
    """``$XDG_CONFIG_HOME/xyoptics/site.yaml``, or ``~/.config/xyoptics/site.yaml``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "xyoptics" / "site.yaml"


def site_path(explicit: str | Path | None = None) -> Path | None:
    """The site file to use: ``explicit``, else ``$XYOPTICS_SITE``, else the default location if that file
    exists, else None. A named file (explicit or environment) that does not exist is a ``ConfigError``."""
    for given, how in ((explicit, "--site"), (os.environ.get(ENV) or None, f"${ENV}")):
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"site safety file {path} (from {how}) does not exist")
            return path
    path = default_site_path()
    return path if path.exists() else None


def load_site(explicit: str | Path | None = None) -> SiteConfig | None:
    """The validated site file found by ``site_path(explicit)``, or None when there is none."""
    path = site_path(explicit)
    if path is None:
        return None
    site = load_yaml_model(path, SiteConfig, "site safety file")
    site._path = path.resolve()
    return site
