"""Layer 0, the physics core: XY networks and their energy, forces and parameter derivatives; architectures and
their fast coupling operators; relaxation; costs; the equilibrium-propagation estimator; optimisers; the
``XYMachine`` seam and the digital machine.

It also holds the two pieces of plumbing every layer shares, so that nothing has to reach upwards for them:
``schema`` (strict pydantic settings loaded from YAML) and ``files`` (atomic JSON / HDF5 writes), plus ``angles``.
Nothing here imports any other part of xyoptics, ``drivers`` or ``calibration``.
"""
