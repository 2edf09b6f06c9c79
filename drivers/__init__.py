"""Devices behind xyoptics' interfaces: slmsuite SLM and Camera subclasses (including the simulated optical XY
rig), construction of slmsuite devices from a rig configuration, and lab instruments (laser over pyvisa, shutter
over pyserial) with simulated twins. Depends on ``xyoptics``; ``xyoptics`` core never imports it.

Empty until the hardware-in-the-loop issue lands.
"""
