"""Layer 1, hardware in the loop: a network run on an optical rig through any slmsuite SLM and camera.

``devices`` builds slmsuite devices from a rig file (trusted import paths only), ``rig`` validates rig files and
opens the optical machine, ``layout`` places a network (in one or several replicas) on SLM tiles and camera
spots, ``slmwriter`` writes only the tiles that changed, ``patches`` holds each spot's pixels and weights,
``readout`` turns camera frames into phases, ``optical`` is the ``OpticalXYMachine`` and ``clock`` gives real
or virtual time. Depends on ``core`` (and slmsuite) only: no vendor driver, calibration procedure or lab
session is imported here.
"""
