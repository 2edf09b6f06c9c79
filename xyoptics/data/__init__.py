"""Layer 1, data sets encoded as clamped input angles in [-pi/2, pi/2] (``datasets``: XOR, Iris, 8x8 digits,
MNIST) and the checked IDX reader (``idx``). Depends on ``core`` only."""
