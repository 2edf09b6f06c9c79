"""Layer 3, the lab: the resumable EP ``trainer``, lab ``session``s that open and park the instruments, verified
``checkpoint``s, the per-step ``anglelog``, ``build`` (config -> network, data, machine, optimiser) and
``stopping`` (SIGINT / SIGTERM at step boundaries). Uses every layer below it: core, data, hil, analysis,
drivers and calibration."""
