"""Hardware in the loop at lab scale: where the time of an optical equilibrium goes, from 64 to 4,096 spins.

Square lattices (2 inputs, 1 output) on the simulated rig with its default imperfections, SLM and camera sized
to fit (``layout.fitting_shapes``). Per size, in a process of its own (so that peak memory is its own):

* ``controller ms/frame``: the wall time of the same equilibria run again with the devices' hardware hooks
  (``RigSLM._set_phase_hw``, ``RigCamera._get_image_hw``: the simulated physics, which a real SLM and camera do
  in hardware) replaced by a replay of the recorded frames, per camera frame. It holds the SLM image (tile
  settings, incremental encoding, slmsuite's write path), the readout (slmsuite's ``get_image``, gathering the
  spots' pixels, phase shifting, flags) and the bookkeeping. Settle waits cost nothing: the clock is virtual.
  ``beside physics`` is the wall time minus the hooks' time in the run with the simulator, whose memory traffic
  leaves the controller's arrays out of the CPU caches;
* ``full-write ms/frame``: the same with incremental writes switched off (every write re-encodes the whole
  image with ``slm.set_phase``), side by side;
* ``rig ms/frame``: the simulated physics per camera frame (SLM response, spin relaxation, frame synthesis);
* ``ms/equilibrium`` (wall) and ``light ms/equilibrium`` (virtual clock: the settle waits a 200 Hz SLM needs);
  ``frames/eq`` camera frames and SLM writes per equilibrium; ``peak MiB`` the process's peak resident memory.

Each size runs a batch of free equilibria from seeded random starts and the nudged equilibria that start from
them, as an EP step does. ``--replicas R`` adds the throughput of a rig holding R copies of the network
(samples per second of wall time, against R = 1), ``--calibrate`` the time of a full calibration per size.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/optical_scale.py --out benchmarks/results/optical_scale.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(rows: int, replicas: int = 1):
    """Network, topology and simulated devices of a rows x rows lattice rig, sized to fit."""
    from drivers.simulated_rig import RigCamera, RigSLM
    from xyoptics.core.architectures import square_lattice
    from xyoptics.hil.layout import LayoutConfig, RigTopology, fitting_shapes

    net = square_lattice(rows, rows, inputs=2, outputs=1)
    topology = RigTopology(n_spins=net.n_spins, bonds=[tuple(e) for e in net.edges.tolist()], replicas=replicas)
    (slm_rows, slm_cols), (cam_rows, cam_cols) = fitting_shapes(topology, LayoutConfig())
    slm = RigSLM((slm_cols, slm_rows), 8, topology=topology.model_dump(), seed=0,
                 camera_resolution=(cam_cols, cam_rows))
    return net, topology, slm, RigCamera(slm, resolution=(cam_cols, cam_rows))


class DeviceTimer:
    """Times the devices' hardware hooks (the simulated physics) and records every frame, or -- once
    ``replay()`` is called -- stands in for the devices: writes cost nothing and grabs return the recorded
    frames in order, as hardware that takes no CPU would."""

    def __init__(self, slm, camera):
        self.seconds, self.writes, self.frames, self.recorded = 0.0, 0, 0, []
        self.slm, self.camera = slm, camera
        self.hooks = {"slm": slm._set_phase_hw, "camera": camera._get_image_hw}
        slm._set_phase_hw = self._timed(self.hooks["slm"], "writes")
        camera._get_image_hw = self._timed(self._record, "frames")

    def _record(self, *args, **kwargs):
        frame = self.hooks["camera"](*args, **kwargs)
        self.recorded.append(frame)
        return frame

    def _timed(self, hook, counter):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                setattr(self, counter, getattr(self, counter) + 1)
        return timed

    def replay(self) -> None:
        frames = iter(self.recorded)
        self.slm._set_phase_hw = lambda display, **kwargs: None
        self.camera._get_image_hw = lambda *args, **kwargs: next(frames)


def measure_size(rows: int, batch: int, replicas: int = 1, full_writes: bool = False) -> dict:
    from xyoptics.core.costs import CosineCost
    from xyoptics.core.machine import Nudge
    from xyoptics.hil.optical import OpticalXYMachine

    net, topology, slm, camera = build(rows, replicas)
    machine = OpticalXYMachine(net, slm, camera, topology)
    if full_writes:
        machine.writer.incremental = False
    rng = np.random.default_rng(0)
    params = net.init_params(rng, coupling_std=0.7)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, len(net.inputs)))
    nudge = Nudge(0.5, np.zeros((batch, len(net.outputs))), CosineCost())
    machine.equilibrate(params, x[:1], rng=rng)  # warm-up: first full write, caches

    def step():  # an EP step's equilibria: free from seeded random starts, then nudged from them
        starts = np.random.default_rng(1)
        t0 = time.perf_counter()
        free = machine.equilibrate(params, x, rng=starts)
        nudged = machine.equilibrate(params, x, nudge=nudge, start=free)
        return time.perf_counter() - t0, free.usable & nudged.usable

    timer = DeviceTimer(slm, camera)
    light0 = machine.clock.now()
    wall, usable = step()
    light = machine.clock.now() - light0
    timer.replay()
    replayed, _ = step()
    n_eq, frames = 2 * batch, timer.frames
    return {"rows": rows, "spins": net.n_spins, "replicas": replicas, "batch": batch,
            "slm": list(slm.shape), "camera": list(camera.shape), "tiles": machine.layout.n_tiles,
            "controller_ms_per_frame": 1e3 * replayed / frames,
            "controller_beside_physics_ms_per_frame": 1e3 * (wall - timer.seconds) / frames,
            "rig_ms_per_frame": 1e3 * timer.seconds / frames, "ms_per_equilibrium": 1e3 * wall / n_eq,
            "light_ms_per_equilibrium": 1e3 * light / n_eq, "frames_per_equilibrium": frames / n_eq,
            "writes_per_equilibrium": timer.writes / n_eq, "samples_per_s": batch / wall,
            "usable": float(np.mean(usable)), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_calibration(rows: int) -> dict:
    from calibration.runner import run_calibration
    from xyoptics.core.architectures import square_lattice
    from xyoptics.hil.layout import fitting_shapes
    from xyoptics.hil.rig import rig_topology, simulated_rig

    net = square_lattice(rows, rows, inputs=2, outputs=1)
    cfg = simulated_rig()
    (slm_rows, slm_cols), (cam_rows, cam_cols) = fitting_shapes(rig_topology(cfg, net), cfg.layout)
    slm = cfg.slm.model_copy(update={"kwargs": {**cfg.slm.kwargs, "resolution": [slm_cols, slm_rows],
                                                "camera_resolution": [cam_cols, cam_rows]}})
    camera = cfg.camera.model_copy(update={"kwargs": {**cfg.camera.kwargs, "resolution": [cam_cols, cam_rows]}})
    cfg = cfg.model_copy(update={"slm": slm, "camera": camera})
    with tempfile.TemporaryDirectory() as folder:
        report = run_calibration(cfg, net, folder, progress=False)
    return {"rows": rows, "spins": net.n_spins, "seconds": report["seconds"], "ok": report["ok"],
            "procedures": {name: {k: entry.get(k) for k in ("status", "seconds", "frames", "truth_error", "reason")}
                           for name, entry in report["results"].items()},
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_child(task: dict) -> dict:
    """Run one measurement in a fresh interpreter (its own peak memory, one BLAS thread)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    if out.returncode:
        raise RuntimeError(f"{task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(task: dict) -> dict:
    logging.getLogger("slmsuite").setLevel(logging.ERROR)
    sys.path.insert(0, str(ROOT))
    if task["kind"] == "calibration":
        return measure_calibration(task["rows"])
    return measure_size(task["rows"], task["batch"], task.get("replicas", 1), task.get("full_writes", False))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64], help="lattice side lengths")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--replicas", type=int, default=4, help="also measure this many replicas (1: skip)")
    ap.add_argument("--replica-sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--calibrate", type=int, nargs="*", default=[], help="lattice sides to calibrate")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    results = {"sizes": [], "replicas": [], "calibration": []}
    print(f"{'spins':>6} {'SLM':>10} {'camera':>8} {'controller':>11} {'beside':>8} {'full-write':>11} {'rig':>8} "
          f"{'ms/eq':>8} {'light ms/eq':>11} {'frames/eq':>9} {'writes/eq':>9} {'peak MiB':>9}")
    for rows in args.sizes:
        r = in_child({"kind": "size", "rows": rows, "batch": args.batch})
        full = in_child({"kind": "size", "rows": rows, "batch": min(args.batch, 2), "full_writes": True})
        r["full_write_controller_ms_per_frame"] = full["controller_ms_per_frame"]
        results["sizes"].append(r)
        print(f"{r['spins']:>6} {r['slm'][1]:>5}x{r['slm'][0]:<4} {r['camera'][1]:>4}x{r['camera'][0]:<3} "
              f"{r['controller_ms_per_frame']:>8.2f} ms {r['controller_beside_physics_ms_per_frame']:>5.2f} ms "
              f"{full['controller_ms_per_frame']:>8.2f} ms "
              f"{r['rig_ms_per_frame']:>5.1f} ms {r['ms_per_equilibrium']:>8.1f} {r['light_ms_per_equilibrium']:>11.1f} "
              f"{r['frames_per_equilibrium']:>9.1f} {r['writes_per_equilibrium']:>9.1f} {r['peak_mib']:>9.0f}")
    if args.replicas > 1:
        print(f"\n{'spins':>6} {'replicas':>8} {'samples/s':>10} {'gain':>6} {'frames/sample':>13}")
        for rows in args.replica_sizes:
            one, many = (in_child({"kind": "size", "rows": rows, "batch": 2 * args.replicas, "replicas": r})
                         for r in (1, args.replicas))
            gain = many["samples_per_s"] / one["samples_per_s"]
            results["replicas"].append({"rows": rows, "one": one, "replicated": many, "throughput_gain": gain})
            for r in (one, many):
                print(f"{r['spins']:>6} {r['replicas']:>8} {r['samples_per_s']:>10.1f} "
                      f"{r['samples_per_s'] / one['samples_per_s']:>6.2f} {r['frames_per_equilibrium']:>13.2f}")
    if args.calibrate:
        print(f"\n{'spins':>6} {'calibration s':>13}  per procedure (s, frames)")
        for rows in args.calibrate:
            c = in_child({"kind": "calibration", "rows": rows})
            results["calibration"].append(c)
            parts = ", ".join(f"{k} {v['seconds']} s/{v['frames']}" for k, v in c["procedures"].items())
            print(f"{c['spins']:>6} {c['seconds']:>13.1f}  {parts}")
    if args.out:
        from xyoptics.core.files import write_json_atomic
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, results)


if __name__ == "__main__":
    main()
