"""Layer 1, hardware in the loop: a network run on an optical rig through any slmsuite SLM and camera.

``devices`` builds slmsuite devices from a rig file (trusted import paths only), ``rig`` validates rig files and
opens the optical machine, ``layout`` places a network on SLM tiles and camera spots, ``readout`` turns camera
frames into phases, ``optical`` is the ``OpticalXYMachine`` and ``clock`` gives real or virtual time. Depends on
``core`` only: no vendor driver, calibration procedure or lab session is imported here.
"""
