"""Command line: ``xyoptics train CONFIG.yaml [--out RUN_DIR]``, ``xyoptics data fetch mnist --dest DIR``,
``xyoptics --version``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .config import ConfigError, load_config


def _train(args) -> int:
    cfg = load_config(args.config)  # fails before any work
    from .train import train

    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        summary = train(cfg, out, progress=not args.quiet).summary
    except KeyboardInterrupt:
        print(f"interrupted; partial results saved in {out}", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    print(f"run folder: {out}")
    return 0


def _fetch(args) -> int:
    from urllib.error import URLError

    from .idx import DEFAULT_MIRROR, ChecksumError, fetch_mnist

    try:
        dest = fetch_mnist(args.dest, base_url=args.base_url or DEFAULT_MIRROR)
    except (URLError, OSError, ChecksumError) as exc:
        print(f"error: fetching MNIST failed: {exc}", file=sys.stderr)
        return 1
    print(f"MNIST files verified in {dest}; point XYOPTICS_DATA there to use them")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xyoptics", description=__doc__)
    parser.add_argument("--version", action="version", version=f"xyoptics {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a network with equilibrium propagation")
    p.add_argument("config", help="training config (YAML)")
    p.add_argument("--out", help="run folder (default runs/<config>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
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
