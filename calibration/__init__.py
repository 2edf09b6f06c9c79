"""Calibration of the optical rig, measured only through its SLM and camera interfaces, and the versioned HDF5
calibration store. Depends on ``xyoptics`` and, for device construction, on slmsuite; ``xyoptics`` core never
imports it.

Procedures so far: ``settle`` (timing.py), ``spot_map`` and ``path_offsets`` (spots.py); ``runner.py`` runs
them in dependency order into a ``store.CalibrationStore``.
"""
