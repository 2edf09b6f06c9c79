"""A live session monitor in the browser: ``xyoptics monitor RUN_DIR`` and ``xyoptics train ... --monitor``.

A Bokeh server app (BokehJS served by the server itself, nothing from a CDN) that follows a run from its run
folder while it runs and replays it when it has ended: ``runfolder`` reads the folder (metrics as they are
appended, summary, calibration, the trainer's live data of ``xyoptics.lab.live``), ``page`` draws it,
``control`` holds the token that every action changing the run needs and asks for the safe stop, ``server``
serves the page (127.0.0.1 by default) and the token-checked ``POST /stop``.
"""
