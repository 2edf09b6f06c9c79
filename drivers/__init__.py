"""Devices behind xyoptics' interfaces: the simulated optical XY rig as slmsuite ``SLM`` and ``Camera`` subclasses
(``simulated_rig``) over one physics engine (``xyrig``), and lab instruments with simulated twins: the laser over
pyvisa (``laser``, pyvisa-sim YAML in ``sim/``), the beam shutter over pyserial (``shutter``, URL handler in
``serial_handlers``) and the session's checks of both (``instruments``).

Layer 2: uses ``xyoptics.core`` and ``xyoptics.hil``; the physics core and the optical machine never import it.
A vendor SLM or camera needs no code here: slmsuite's own drivers are named in the rig file.
"""
