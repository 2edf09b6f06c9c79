"""slmsuite devices of the simulated optical XY rig: ``RigSLM`` and ``RigCamera`` share one ``XYRigEngine``.

They implement only slmsuite's hardware hooks (``_set_phase_hw``; ``_get_image_hw`` and exposure), exactly as a
vendor driver would, so everything above them is the code a lab runs on real devices. A rig YAML names them:

    slm:    {class: drivers.simulated_rig.RigSLM, kwargs: {resolution: [256, 128], topology: {...}, seed: 0}}
    camera: {class: drivers.simulated_rig.RigCamera, kwargs: {slm: "@slm", resolution: [160, 120]}}
"""

from __future__ import annotations

import numpy as np
from slmsuite.hardware.cameras.camera import Camera
from slmsuite.hardware.slms.slm import SLM

from xyoptics.hil.clock import RealClock, VirtualClock
from xyoptics.hil.layout import LayoutConfig, RigTopology

from .xyrig import Imperfections, XYRigEngine


class RigSLM(SLM):
    """Phase-only SLM of the simulated rig. ``topology`` is the rig's optical routing, ``layout`` its tile
    geometry, ``imperfections`` the hidden defects (None: defaults; "none": all off), ``clock`` "virtual"
    (settle times pass instantly) or "real"; ``rig_name`` is what a simulated shutter (xyshutter://RIG_NAME)
    refers to."""

    def __init__(self, resolution=(256, 128), bitdepth: int = 8, *, topology, layout=None, imperfections=None,
                 seed: int = 0, settle_time_s: float = 0.005, clock: str = "virtual", camera_resolution=(160, 120),
                 name: str = "simulated-xy-rig-slm", rig_name: str = "simulated-xy-rig", **kwargs):
        topology = RigTopology.model_validate(topology)
        layout = LayoutConfig.model_validate(layout or {})
        if imperfections == "none":
            imperfections = Imperfections.none()
        imperfections = Imperfections.model_validate(imperfections or {})
        if clock not in ("virtual", "real"):
            raise ValueError("clock must be 'virtual' or 'real'")
        self.clock = VirtualClock() if clock == "virtual" else RealClock()
        self.engine = XYRigEngine(topology, layout, (resolution[1], resolution[0]),
                                  (camera_resolution[1], camera_resolution[0]), imperfections=imperfections,
                                  settle_time_s=settle_time_s, seed=seed, clock=self.clock,
                                  camera_bitdepth=kwargs.pop("camera_bitdepth", 12), rig_name=rig_name)
        super().__init__(resolution, bitdepth=bitdepth, name=name, settle_time_s=settle_time_s, gpu=False, **kwargs)

    def _set_phase_hw(self, display):
        self.engine.display(np.asarray(display), self._gamma_sign, self.bitresolution)

    def state_dict(self) -> dict:
        """The simulation's dynamic state, for exact replay from a training checkpoint (real SLMs have none)."""
        return self.engine.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.engine.load_state_dict(state)

    def close(self):
        """Nothing to release for a simulated device."""


class RigCamera(Camera):
    """Camera of the simulated rig: frames of the spots interfering with the reference beam."""

    def __init__(self, slm: RigSLM, resolution=(160, 120), bitdepth: int = 12, exposure_s: float = 1e-3,
                 name: str = "simulated-xy-rig-camera", **kwargs):
        if not isinstance(slm, RigSLM):
            raise TypeError("RigCamera needs the RigSLM of the same rig (slm: '@slm')")
        expected = slm.engine.camera_shape
        if (resolution[1], resolution[0]) != expected:
            raise ValueError(f"camera resolution {tuple(resolution)} differs from the rig's "
                             f"{(expected[1], expected[0])} (RigSLM camera_resolution)")
        self.engine, self.clock, self._rig_exposure_s = slm.engine, slm.clock, float(exposure_s)
        super().__init__(resolution, bitdepth=bitdepth, name=name, exposure_bounds_s=(1e-6, 1.0), **kwargs)

    def close(self):
        """Nothing to release for a simulated device."""

    def flush(self, timeout_s=1):
        """Frames are rendered when grabbed, so no stale frame is ever buffered: nothing to discard."""

    def _get_exposure_hw(self):
        return self._rig_exposure_s

    def _set_exposure_hw(self, exposure_s):
        self._rig_exposure_s = float(exposure_s)

    def _get_image_hw(self, timeout_s=1):
        frame = self.engine.frame(self._rig_exposure_s)
        return frame.astype(np.uint16)
