"""`mhsm setting list|show|update`: the pool's account settings through KeyVaultSettingsClient,
flags after `az keyvault setting` (API §3.3)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from openmhsm.cli.output import emit, reports_errors
from openmhsm.cli.pool_location import pool_command_parent, pool_of
from openmhsm.client import connect

if TYPE_CHECKING:
    from azure.keyvault.administration import KeyVaultSetting

COLUMNS = ("name", "value", "type")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    setting = commands.add_parser("setting", help="show and change the pool's account settings")
    sub = setting.add_subparsers(dest="setting_command", required=True, metavar="COMMAND")
    common = pool_command_parent()
    listing = sub.add_parser("list", parents=[common], help="every setting and its value")
    listing.set_defaults(run=reports_errors(run_list))
    show = sub.add_parser("show", parents=[common], help="one setting")
    show.add_argument(
        "--name", "-n", required=True, help="e.g. AllowKeyManagementOperationsThroughARM"
    )
    show.set_defaults(run=reports_errors(run_show))
    update = sub.add_parser("update", parents=[common], help="change a setting")
    update.add_argument("--name", "-n", required=True, help="the setting's name")
    update.add_argument("--value", required=True, help='the new value, e.g. "true"')
    update.add_argument(
        "--setting-type", choices=("boolean",), help="the setting's type (default: as it is)"
    )
    update.set_defaults(run=reports_errors(run_update))


def setting_json(setting: KeyVaultSetting) -> dict[str, Any]:
    kind = setting.setting_type
    return {"name": setting.name, "value": setting.value, "type": getattr(kind, "value", kind)}


def run_list(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        found = [setting_json(s) for s in clients.settings.list_settings()]
    emit(found, args.output, COLUMNS)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(setting_json(clients.settings.get_setting(args.name)), args.output, COLUMNS)
    return 0


def run_update(args: argparse.Namespace) -> int:
    from azure.keyvault.administration import KeyVaultSetting

    with connect(pool_of(args)) as clients:
        wanted = KeyVaultSetting(name=args.name, value=args.value, setting_type=args.setting_type)
        emit(setting_json(clients.settings.update_setting(wanted)), args.output, COLUMNS)
    return 0
