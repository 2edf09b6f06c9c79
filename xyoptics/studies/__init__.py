"""Studies of the seed paper's findings (Wang, Wanjura & Marquardt, arXiv 2601.21945), each runnable as
``xyoptics study <name> CONFIG --out DIR [--engine local|ray] [--address ADDR] [--workers N] [--smoke]``.

* ``xor_success``: XOR success rate over seeds for all-to-all, plain lattices and lattices with skip connections
  of several lengths (fixed number of extra bonds).
* ``xor_size``: XOR final cost against the size of an all-to-all network (the 2024 sweep, N = 3 ... 50).
* ``skip_control``: skip length on 8x8 and 10x10 lattices with a fixed bond count, against a control whose skips
  never shorten the input-output distance; success rate and nudge-response range.
* ``nudge_costs``: log-cosine, cosine and adaptive nudges on the same seeds, digitally and through the rig.
* ``replicate``: training configs over many seeds, each tuned on validation first (digits, MNIST), with intervals.
* ``regions``: how "affected" and "marginal" regions of a lattice form during XOR training.
* ``iris_size``: Iris test accuracy against the size of a square lattice.
* ``mnist_local``: MNIST with locally connected and CNN-like hidden layers against a dense layered baseline.

Each study module defines ``Config`` (pydantic, unknown keys rejected, with a ``smoke()`` reduction),
``run(cfg, out_dir, progress=True, workers=1, engine=None) -> dict`` (writes ``results.json``, ``table.md`` and
PNG figures) and ``main(argv)``. ``common.run_main(name, argv)`` is the shared command line. Runs go through
``engine`` (the local process pool by default, or Ray); each run's record streams to ``OUT/runs/<key>.json`` as it
ends and a study started again skips the runs recorded ``ok`` (``records``).
"""

STUDIES = ("xor_success", "xor_size", "skip_control", "nudge_costs", "replicate", "regions", "iris_size",
           "mnist_local")
