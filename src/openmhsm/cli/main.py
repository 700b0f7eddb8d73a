"""`mhsm`: the command line. Each command group lives in its own module and registers itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from azure.core.exceptions import AzureError

from openmhsm.cli import (
    audit,
    backup,
    completion,
    deploy,
    keys,
    maintain,
    partition,
    pool,
    pool_lifecycle,
    principals,
    region,
    roles,
    security_domain,
    settings,
    status,
)
from openmhsm.cli.output import error_line


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
    roles.register(commands)
    settings.register(commands)
    completion.register(commands)
    deploy.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except AzureError as e:  # a command that does not report its own: one line, no traceback
        print(error_line(e), file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
