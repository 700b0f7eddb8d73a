"""`mhsm`: the command line. Each command group lives in its own module and registers itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from openmhsm.cli import (
    audit,
    backup,
    deploy,
    keys,
    maintain,
    partition,
    pool,
    pool_lifecycle,
    principals,
    region,
    security_domain,
    status,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhsm", description="OpenMHSM: a self-hosted Managed HSM that speaks Azure's API."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pool.register(commands)
    pool_lifecycle.register(commands)
    keys.register(commands)
    partition.register(commands)
    status.register(commands)
    maintain.register(commands)
    security_domain.register(commands)
    principals.register(commands)
    audit.register(commands)
    backup.register(commands)
    backup.register_restore(commands)
    region.register(commands)
    deploy.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
