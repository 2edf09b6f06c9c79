"""Calibration procedures that measure the optical rig only through its SLM and camera interfaces, and the
versioned HDF5 calibration store. Depends on ``xyoptics`` and ``drivers``; ``xyoptics`` core never imports it.

Empty until the calibration issue lands.
"""
