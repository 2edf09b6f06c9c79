"""Command line: ``xyoptics train CONFIG.yaml [--machine digital|simulated|RIG.yaml] [--out RUN_DIR]``,
``xyoptics train --resume RUN_DIR``, ``xyoptics study NAME CONFIG --out DIR``,
``xyoptics rig check RIG.yaml``, ``xyoptics data fetch mnist --dest DIR``, ``xyoptics --version``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config
from .studies import STUDIES


def _train(args) -> int:
    from .lab.session import run_session
    from .lab.trainer import TrainingFailed

    if args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR continues that run with its own config: give no CONFIG or --out")
        out, cfg = Path(args.resume), None
    else:
        if not args.config:
            raise ConfigError("give a training CONFIG (or --resume RUN_DIR)")
        cfg = load_config(args.config)  # fails before any work
        out = Path(args.out) if args.out else \
            Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = run_session(cfg, out, machine=args.machine, calibration=args.calibration, trust=args.trust,
                             progress=not args.quiet, resume=bool(args.resume))
    except TrainingFailed as exc:
        print(f"error: {exc}\ncheckpoint saved; after fixing the cause: xyoptics train --resume {out}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; partial results saved in {out}", file=sys.stderr)
        return 130
    print(json.dumps(result.summary, indent=2))
    print(f"run folder: {out}")
    if result.summary["status"].startswith("stopped"):
        print(f"stopped safely; continue with: xyoptics train --resume {out}", file=sys.stderr)
        return 130
    return 0


def _study(args) -> int:
    from .studies.common import run_main

    return run_main(args.name, args.rest)


def _fetch(args) -> int:
    from urllib.error import URLError

    from .data.idx import DEFAULT_MIRROR, ChecksumError, fetch_mnist

    try:
        dest = fetch_mnist(args.dest, base_url=args.base_url or DEFAULT_MIRROR)
    except (URLError, OSError, ChecksumError) as exc:
        print(f"error: fetching MNIST failed: {exc}", file=sys.stderr)
        return 1
    print(f"MNIST files verified in {dest}; point XYOPTICS_DATA there to use them")
    return 0


def _calibrate(args) -> int:
    from calibration.runner import run_calibration

    from .hil.rig import load_rig, simulated_rig

    rig = simulated_rig() if args.rig == "simulated" else load_rig(args.rig)
    net = None
    if rig.topology == "network":
        if not args.config:
            raise ConfigError(f"rig {rig.name!r} is built for a network (topology: network): give --config")
        from .lab.trainer import prepare
        _, _, net = prepare(load_config(args.config))
    report = run_calibration(rig, net, args.out, only=args.only, trusted=args.trust, progress=not args.quiet)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _rig_check(args) -> int:
    from drivers.instruments import open_instruments

    from .core.machine import DeviceFault
    from .hil.devices import DeviceError
    from .hil.rig import check_rig, load_rig, simulated_rig
    from .hil.selftest import SelfTestFailed

    rig = simulated_rig() if args.rig == "simulated" else load_rig(args.rig)
    try:
        with open_instruments(rig.laser, rig.shutter) as instruments:  # parked (shutter closed, laser off) on exit
            report = check_rig(rig, args.trust, shutter=instruments.shutter)
    except SelfTestFailed as exc:
        print(json.dumps(getattr(exc, "report", {}), indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (DeviceError, DeviceFault) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    stages = ", ".join(f"{name} {r['status']}" for name, r in report["self_test"].items())
    print(f"light path: {stages}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xyoptics", description=__doc__)
    parser.add_argument("--version", action="version", version=f"xyoptics {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a network with equilibrium propagation")
    p.add_argument("config", nargs="?", help="training config (YAML)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--machine", default="digital",
                   help="digital (default), simulated (the embedded simulated optical rig) or a rig YAML")
    p.add_argument("--trust", action="append", default=[], metavar="MODULE",
                   help="also allow device classes from this module prefix")
    p.add_argument("--calibration", metavar="DIR",
                   help="use the latest valid calibrations in this folder (default: the rig's calibration_dir)")
    p.set_defaults(func=_train)
    cal = sub.add_parser("calibrate", help="calibrate an optical rig through its SLM and camera")
    cal.add_argument("rig", help="rig config (YAML), or 'simulated'")
    cal.add_argument("--out", required=True, help="calibration folder (the store)")
    cal.add_argument("--only", nargs="+", metavar="NAME", help="run only these procedures")
    cal.add_argument("--config", help="training config whose network sizes a 'topology: network' rig")
    cal.add_argument("--trust", action="append", default=[], metavar="MODULE")
    cal.add_argument("--quiet", action="store_true")
    cal.set_defaults(func=_calibrate)
    rig = sub.add_parser("rig", help="optical rigs").add_subparsers(dest="rig_command", required=True)
    c = rig.add_parser("check", help="open the rig's devices, report what was found, close them")
    c.add_argument("rig", help="rig config (YAML), or 'simulated'")
    c.add_argument("--trust", action="append", default=[], metavar="MODULE")
    c.set_defaults(func=_rig_check)
    study = sub.add_parser("study", help="reproduce a finding of the seed paper (table, JSON and figures)",
                           add_help=False)
    study.add_argument("name", choices=STUDIES)
    study.add_argument("rest", nargs=argparse.REMAINDER, help="CONFIG --out DIR [--smoke] [--workers N] [--quiet]")
    study.set_defaults(func=_study)
    data = sub.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    f = data.add_parser("fetch", help="download and verify a data set")
    f.add_argument("dataset", choices=["mnist"])
    f.add_argument("--dest", required=True, help="folder for the files")
    f.add_argument("--base-url", help="mirror to download from (default: a public MNIST mirror)")
    f.set_defaults(func=_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
