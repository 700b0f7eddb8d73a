"""Where a command that talks to a pool finds it: `--data-dir` (the pool's `pool.json`, used as
its administrator), or az's `--id` (the pool's URL, reached with `DefaultAzureCredential()` and
the CA bundle in REQUESTS_CA_BUNDLE, the environment `mhsm env` prints). az's `--hsm-name` takes
either: a URL, or a data dir."""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

_URL_SCHEMES = ("https", "http")


def add_pool_location(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--data-dir | --id | --hsm-name`, one of them required unless `required` is False."""
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument("--data-dir", type=Path, help="the pool's data dir (where pool.json is)")
    where.add_argument(
        "--id",
        dest="pool_url",
        type=_pool_url,
        metavar="URL",
        help="the pool's URL (az: the HSM's URI; a key id's origin works too); credentials from "
        "the environment `mhsm env` prints",
    )
    where.add_argument(
        "--hsm-name",
        dest="hsm_name",
        metavar="URL_OR_DATA_DIR",
        help="az's flag: the pool's URL (as --id) or its data dir (as --data-dir)",
    )


def pool_of(args: argparse.Namespace) -> str | Path:
    """What `openmhsm.client.connect` takes for the pool the flags name: a data dir or a URL.
    Raises ValueError when no flag names one (a command whose location is optional)."""
    if getattr(args, "data_dir", None) is not None:
        data_dir: Path = args.data_dir
        return data_dir
    if getattr(args, "pool_url", None):
        url: str = args.pool_url
        return url
    name = getattr(args, "hsm_name", None)
    if name:
        if urlsplit(name).scheme.lower() not in _URL_SCHEMES:
            return Path(name)
        try:
            return _pool_url(name)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--hsm-name: {e}") from None
    raise ValueError("name the pool: --data-dir, --id or --hsm-name")


def has_pool_location(args: argparse.Namespace) -> bool:
    return any(getattr(args, f, None) for f in ("data_dir", "pool_url", "hsm_name"))


def _pool_url(text: str) -> str:
    """The origin (scheme://host:port) of a pool URL or of any URL under it (a key id).
    Raises argparse.ArgumentTypeError."""
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in _URL_SCHEMES or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an https:// URL: {text!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def pool_command_parent() -> argparse.ArgumentParser:
    """A parent parser with what every command that talks to a pool takes: where the pool is
    (`add_pool_location`) and `--output` (`output.add_output_option`)."""
    from openmhsm.cli.output import add_output_option

    parent = argparse.ArgumentParser(add_help=False)
    add_pool_location(parent)
    add_output_option(parent)
    return parent
