"""`mhsm key ...`: manage a pool's keys through the Azure SDK, flags after `az keyvault key`.

Management commands live here; the cryptographic ones (sign, verify, encrypt, decrypt, wrap,
unwrap) in `key_crypto.py`. Every command finds its pool with `--data-dir` (its `pool.json`) or
az's `--id`/`--hsm-name` (its URL; see `pool_location`). az's `--protection hsm` makes `--kty RSA`
mean RSA-HSM; keys are created in the pool either way.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from azure.keyvault.keys import KeyReleasePolicy

from openmhsm.cli import key_crypto
from openmhsm.cli.output import (
    add_output_option,
    deleted_json,
    emit,
    key_json,
    properties_json,
    reports_errors,
    tag_arg,
)
from openmhsm.cli.pool_location import add_pool_location, pool_of
from openmhsm.cli.progress import Progress, add_progress_options, progress_mode
from openmhsm.client import connect

KEY_TYPES = ("RSA-HSM", "EC-HSM", "oct-HSM", "RSA", "EC", "oct")
CURVES = ("P-256", "P-384", "P-521", "P-256K")
KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    key = commands.add_parser("key", help="create, inspect, delete and use keys")
    sub = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    add_pool_location(common)
    add_output_option(common)
    named = argparse.ArgumentParser(add_help=False, parents=[common])
    named.add_argument("--name", "-n", required=True, help="the key's name")

    create = sub.add_parser(
        "create", parents=[named], help="create a key, or a new version of an existing key"
    )
    create.add_argument(
        "--kty", choices=KEY_TYPES, default="RSA-HSM", help="key type (default RSA-HSM)"
    )
    create.add_argument("--size", type=int, help="RSA or oct key size in bits")
    create.add_argument("--curve", choices=CURVES, help="EC curve (default P-256)")
    create.add_argument("--public-exponent", type=int, help="RSA public exponent")
    create.add_argument(
        "--ops",
        nargs="+",
        choices=KEY_OPS,
        metavar="OP",
        help=f"permitted operations: {' '.join(KEY_OPS)}",
    )
    create.add_argument(
        "--protection",
        "-p",
        choices=("hsm", "software"),
        help="az's flag: hsm turns --kty RSA, EC or oct into RSA-HSM, EC-HSM or oct-HSM",
    )
    create.add_argument("--tags", nargs="+", type=tag_arg, metavar="NAME=VALUE", default=[])
    create.add_argument("--disabled", action="store_true", help="create the key disabled")
    create.add_argument(
        "--exportable", action="store_true", help="the key may be released (needs --policy)"
    )
    create.add_argument(
        "--policy", type=Path, metavar="FILE", help="a release policy (JSON file) for the key"
    )
    create.add_argument(
        "--immutable", action="store_true", help="the release policy can never be changed"
    )
    create.add_argument(
        "--not-before",
        type=_timestamp,
        metavar="ISO8601",
        help="not usable before this time (UTC unless an offset is given)",
    )
    create.add_argument(
        "--expires",
        type=_timestamp,
        metavar="ISO8601",
        help="not usable after this time (UTC unless an offset is given)",
    )
    create.set_defaults(run=reports_errors(run_create))

    show = sub.add_parser("show", parents=[named], help="a key's public part and attributes")
    show.add_argument("--version", "-v", help="a version id (default: the latest)")
    show.set_defaults(run=reports_errors(run_show))

    listing = sub.add_parser("list", parents=[common], help="the keys (latest versions)")
    listing.set_defaults(run=reports_errors(run_list))
    versions = sub.add_parser("list-versions", parents=[named], help="a key's versions")
    versions.set_defaults(run=reports_errors(run_list_versions))
    deleted = sub.add_parser("list-deleted", parents=[common], help="soft-deleted keys")
    deleted.set_defaults(run=reports_errors(run_list_deleted))
    show_deleted = sub.add_parser("show-deleted", parents=[named], help="a soft-deleted key")
    show_deleted.set_defaults(run=reports_errors(run_show_deleted))

    delete = sub.add_parser(
        "delete",
        parents=[named],
        help="soft-delete a key (all versions) and wait until it is deleted",
    )
    delete.add_argument("--no-wait", action="store_true", help="do not wait for the deletion")
    add_progress_options(delete)
    delete.set_defaults(run=reports_errors(run_delete))
    recover = sub.add_parser(
        "recover", parents=[named], help="recover a soft-deleted key and wait until it is usable"
    )
    recover.add_argument("--no-wait", action="store_true", help="do not wait for the recovery")
    add_progress_options(recover)
    recover.set_defaults(run=reports_errors(run_recover))
    purge = sub.add_parser(
        "purge", parents=[named], help="permanently remove a soft-deleted key (prints nothing)"
    )
    purge.set_defaults(run=reports_errors(run_purge))

    key_crypto.register(sub, named)


def _timestamp(text: str) -> datetime:
    """argparse type for ISO 8601 times; a time without an offset is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def key_type(kty: str, protection: str | None) -> str:
    """--kty as sent: az's `--protection hsm` adds -HSM to a software key type."""
    return f"{kty}-HSM" if protection == "hsm" and not kty.endswith("-HSM") else kty


def release_policy(args: argparse.Namespace) -> KeyReleasePolicy | None:
    """The release policy of --policy (and --immutable). Raises ValueError, OSError."""
    if args.policy is None:
        if args.immutable:
            raise ValueError("--immutable applies to a release policy: give --policy")
        return None
    data = args.policy.read_bytes()
    try:
        json.loads(data)
    except ValueError:
        raise ValueError(f"{args.policy} is not a JSON release policy") from None
    return KeyReleasePolicy(data, immutable=args.immutable or None)


def run_create(args: argparse.Namespace) -> int:
    policy = release_policy(args)
    with connect(pool_of(args)) as clients:
        key = clients.key_client.create_key(
            args.name,
            key_type(args.kty, args.protection),
            size=args.size,
            curve=args.curve,
            public_exponent=args.public_exponent,
            key_operations=args.ops,
            enabled=not args.disabled,
            tags=dict(args.tags) or None,
            not_before=args.not_before,
            expires_on=args.expires,
            exportable=args.exportable or None,
            release_policy=policy,
        )
        emit(key_json(key), args.output)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(key_json(clients.key_client.get_key(args.name, args.version)), args.output)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        keys = [properties_json(p) for p in clients.key_client.list_properties_of_keys()]
        emit(keys, args.output)
    return 0


def run_list_versions(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        pages = clients.key_client.list_properties_of_key_versions(args.name)
        emit([properties_json(p) for p in pages], args.output)
    return 0


def run_list_deleted(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit([deleted_json(k) for k in clients.key_client.list_deleted_keys()], args.output)
    return 0


def run_show_deleted(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(deleted_json(clients.key_client.get_deleted_key(args.name)), args.output)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        poller = clients.key_client.begin_delete_key(args.name)
        if not args.no_wait:
            with Progress(f"deleting {args.name}", progress_mode(args)):
                poller.wait()
        emit(deleted_json(poller.result()), args.output)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        poller = clients.key_client.begin_recover_deleted_key(args.name)
        if not args.no_wait:
            with Progress(f"recovering {args.name}", progress_mode(args)):
                poller.wait()
        emit(key_json(poller.result()), args.output)
    return 0


def run_purge(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        clients.key_client.purge_deleted_key(args.name)
    return 0
