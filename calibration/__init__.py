"""Calibration of the optical rig, measured only through its SLM and camera (``slm.set_phase``,
``camera.get_image``), so every procedure runs unchanged on vendor devices; and the versioned HDF5 store.

Procedures, one module per concept: ``dark`` (dark frame and per-pixel noise, shutter closed), ``timing``
(settle time), ``gray_phase`` (gray -> phase lookup table), ``spots`` (spot map and path offsets) and
``transfer`` (per-tile gains). ``session`` holds the measurement primitives they share, ``runner`` runs them in
dependency order into a ``store.CalibrationStore`` and ``plots`` draws each result.

Layer 3: uses ``xyoptics.core``, ``xyoptics.hil`` and ``drivers``; only ``xyoptics.lab`` and the CLI use it.
"""
