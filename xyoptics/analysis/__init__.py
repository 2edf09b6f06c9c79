"""Layer 1, analysis of trained networks: ``diagnostics`` (nudge response, input sensitivity, bond maps) and
``plots`` (learning curves and maps drawn on a network's geometry). Depends on ``core`` only."""
