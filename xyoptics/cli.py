"""Command line: ``xyoptics train CONFIG.yaml [--machine digital|simulated|RIG.yaml] [--out RUN_DIR]``,
``xyoptics train --resume RUN_DIR``, ``xyoptics monitor RUN_DIR``, ``xyoptics study NAME CONFIG --out DIR
[--engine local|ray]``, ``xyoptics rig check RIG.yaml``, ``xyoptics data fetch mnist --dest DIR``,
``xyoptics --version``.

Exit codes: 0 done; 1 the work ran and failed (a training run, a calibration, the rig's self-test, a device);
2 a user or environment error, reported as one ``error: ...`` line on stderr before any work (a bad command
line, a config that is unreadable, not UTF-8 YAML or invalid, an unknown calibration procedure, a download the
network or the mirror refused); 130 interrupted or stopped safely, resumable.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config
from .studies import STUDIES

SITE_HELP = "site safety file with the laser power limit (default $XYOPTICS_SITE, else ~/.config/xyoptics/site.yaml)"


class UserError(Exception):
    """A mistake the user or the environment must fix: reported as one ``error:`` line, exit code 2."""


def _train(args) -> int:
    from .lab.session import run_session
    from .lab.trainer import TrainingFailed

    if args.resume:
        if args.config or args.out:
            raise ConfigError("--resume RUN_DIR continues that run with its own config: give no CONFIG or --out")
        if args.init_from or args.allow_partial_calibration:
            raise ConfigError("--resume continues a run exactly as it started: --init-from and "
                              "--allow-partial-calibration start new runs")
        out, cfg = Path(args.resume), None
    else:
        if not args.config:
            raise ConfigError("give a training CONFIG (or --resume RUN_DIR)")
        cfg = load_config(args.config)  # fails before any work
        out = Path(args.out) if args.out else \
            Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    monitor = _start_monitor(out) if args.monitor else None
    try:
        result = run_session(cfg, out, machine=args.machine, calibration=args.calibration, trust=args.trust,
                             progress=not args.quiet, resume=bool(args.resume), init_from=args.init_from,
                             allow_partial_calibration=args.allow_partial_calibration, site=args.site)
    except TrainingFailed as exc:
        print(f"error: {exc}\ncheckpoint saved; after fixing the cause: xyoptics train --resume {out}",
              file=sys.stderr)
        return 1
    except _device_errors() as exc:  # before the first step: nothing was trained
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; partial results saved in {out}", file=sys.stderr)
        return 130
    finally:
        if monitor is not None:
            monitor.stop()
            replay = f"; replay the run with: xyoptics monitor {out}" if out.is_dir() else ""
            print(f"monitor stopped{replay}", file=sys.stderr)
    print(json.dumps(result.summary, indent=2))
    print(f"run folder: {out}")
    if result.summary["status"].startswith("stopped"):
        print(f"stopped safely; continue with: xyoptics train --resume {out}", file=sys.stderr)
        return 130
    return 0


def _start_monitor(run: Path, host: str = "127.0.0.1", port: int | None = None, browser: bool = False):
    """Serve the monitor page of ``run`` (xyoptics.monitor) and print its address and stop token."""
    from .monitor.server import MonitorServer

    try:
        server = MonitorServer(run, host, port).start()
    except OSError as exc:
        raise UserError(f"the monitor cannot listen on {host}:{port or 'any port'}: {exc.strerror or exc}") from None
    print(f"monitor of {run}: {server.url}  (viewing needs nothing; stopping the run from the page needs the "
          f"token {server.token})", file=sys.stderr, flush=True)
    if browser:
        import webbrowser

        webbrowser.open(server.url)
    return server


def _monitor(args) -> int:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is no folder; give the run folder of an xyoptics train run")
    server = _start_monitor(run, args.host, args.port, browser=not args.no_browser)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("monitor stopped", file=sys.stderr)
    finally:
        server.stop()
    return 0


STUDY_USAGE = ("xyoptics study NAME CONFIG --out DIR [--engine local|ray] [--address ADDR] [--workers N] "
               "[--smoke] [--restart] [--quiet]\n"
               "       xyoptics study NAME --help   (that study's options)")


def _study_help(parser: argparse.ArgumentParser) -> None:
    """Print the study command's help: usage and one line per study (its module docstring's first paragraph,
    read from the source, so listing does not import the studies)."""
    lines = []
    for name in STUDIES:
        doc = ast.get_docstring(ast.parse((Path(__file__).parent / "studies" / f"{name}.py").read_text()))
        summary = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"  {name:<12} {summary}")
    parser.epilog = "studies:\n" + "\n".join(lines)
    parser.print_help()


class _StudyHelp(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="list the studies")

    def __call__(self, parser, namespace, values, option_string=None):
        _study_help(parser)
        parser.exit()


def _study(args) -> int:
    if args.name is None:
        _study_help(args.study_parser)
        return 0
    from .studies.common import run_main

    return run_main(args.name, args.rest)


def _fetch(args) -> int:
    from .data.idx import DATA_ENV, DEFAULT_MIRROR, MNIST_FILES, ChecksumError, FetchError, fetch_mnist, find_mnist_dir

    try:
        dest = fetch_mnist(args.dest, base_url=args.base_url or DEFAULT_MIRROR)
    except (FetchError, ChecksumError) as exc:
        try:
            found = f"; training already finds MNIST files in {find_mnist_dir()}"
        except FileNotFoundError:
            found = ""
        raise UserError(
            f"fetching MNIST failed: {exc}; offline, copy {', '.join(MNIST_FILES)} into {args.dest} by hand and "
            f"rerun to verify them, or give --base-url a local mirror (http://HOST/DIR/ or file:///DIR/), or set "
            f"{DATA_ENV} to a folder holding the IDX files (unset, the repository's ../shared/data/mnist/ is "
            f"used){found}") from None
    except OSError as exc:  # the destination, not the download
        raise UserError(f"fetching MNIST failed: cannot write {exc.filename or args.dest}: "
                        f"{exc.strerror or exc}") from None
    print(f"MNIST files verified in {dest}; point {DATA_ENV} there to use them")
    return 0


def _device_errors() -> tuple[type[Exception], ...]:
    """What an instrument or device raises when it fails (not the user's mistake): exit code 1."""
    from drivers.laser import LaserError
    from drivers.shutter import ShutterError

    from .core.machine import DeviceFault
    from .hil.devices import DeviceError

    return DeviceError, DeviceFault, LaserError, ShutterError


def _calibrate(args) -> int:
    from calibration.runner import PROCEDURES, run_calibration

    from .hil.rig import follows_network, load_rig, simulated_rig

    unknown = [name for name in args.only or () if name not in PROCEDURES]
    if unknown:
        raise UserError(f"unknown calibration procedure{'s' * (len(unknown) > 1)} {', '.join(unknown)} for "
                        f"--only; choose from {', '.join(PROCEDURES)}")
    rig = simulated_rig() if args.rig == "simulated" else load_rig(args.rig)
    net = None
    if follows_network(rig):
        if not args.config:
            raise ConfigError(f"rig {rig.name!r} is built for a network (topology: network): give --config")
        from .lab.trainer import prepare
        _, _, net = prepare(load_config(args.config))
    from .hil.riglock import rig_lock

    with rig_lock(rig, f"calibrate {args.out}"):
        report = run_calibration(rig, net, args.out, only=args.only, trusted=args.trust, progress=not args.quiet)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def _rig_check(args) -> int:
    from drivers.instruments import open_instruments

    from .hil.rig import check_rig, load_rig, simulated_rig
    from .hil.riglock import rig_lock
    from .hil.selftest import SelfTestFailed
    from .hil.site import load_site

    rig = simulated_rig() if args.rig == "simulated" else load_rig(args.rig)
    site = load_site(args.site)
    try:
        with rig_lock(rig, "rig check"), open_instruments(rig.laser, rig.shutter, site=site) as instruments:
            report = check_rig(rig, args.trust, shutter=instruments.shutter)  # instruments parked on exit
    except SelfTestFailed as exc:
        print(json.dumps(getattr(exc, "report", {}), indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _device_errors() as exc:
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
                   help="use the calibration set in this folder (default: the rig's calibration_dir)")
    p.add_argument("--allow-partial-calibration", action="store_true",
                   help="train with the calibrations that are whole, leaving out (and recording) the others")
    p.add_argument("--init-from", metavar="RUN_DIR",
                   help="start a new run from the parameters of that run's newest good checkpoint")
    p.add_argument("--site", metavar="FILE", help=SITE_HELP)
    p.add_argument("--monitor", action="store_true",
                   help="serve a live monitor page of the run on 127.0.0.1 (address and stop token printed)")
    p.set_defaults(func=_train)
    m = sub.add_parser("monitor", help="follow a run live in the browser, or replay a finished one")
    m.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    m.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    m.add_argument("--port", type=int, help="port (default 5006, or a free one when that is taken)")
    m.add_argument("--no-browser", action="store_true", help="do not open a browser")
    m.set_defaults(func=_monitor)
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
    c.add_argument("--site", metavar="FILE", help=SITE_HELP)
    c.set_defaults(func=_rig_check)
    # own help action: arguments after NAME, --help included, pass through to the study (studies.common.run_main)
    study = sub.add_parser("study", help="reproduce a finding of the seed paper (table, JSON and figures)",
                           usage=STUDY_USAGE, add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Reproduce a finding of the seed paper (Wang, Wanjura & Marquardt, arXiv "
                                       "2601.21945): a table, results.json and figures in --out.\n"
                                       "Each training is one run, on a local process pool (default) or as a Ray "
                                       "task (--engine ray;\n--address joins a cluster). A run's record streams "
                                       "to --out/runs/ as it ends; the same command run again\nskips the runs "
                                       "already done and retries the failed or stopped ones.")
    study.add_argument("-h", "--help", action=_StudyHelp)
    study.add_argument("name", nargs="?", choices=STUDIES, help=argparse.SUPPRESS)
    study.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    study.set_defaults(func=_study, study_parser=study)
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
    except (ConfigError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
