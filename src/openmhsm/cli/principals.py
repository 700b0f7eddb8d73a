"""`mhsm principal create|list|delete|reset-secret`: the pool's service principals and managed
identities, through OpenMHSM's own `/openmhsm/principals` endpoint (not an Azure API).

Requests go through the KeyClient's pipeline (`send_request`) with the administrator credential
from `pool.json`, so TLS, the challenge and the token are the Azure SDK's. Results are JSON; a
secret (or a managed identity's `IDENTITY_HEADER`) is printed once and cannot be shown again.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.rest import HttpRequest

from openmhsm.cli.output import emit, reports_errors
from openmhsm.cli.pool_location import pool_command_parent, pool_of
from openmhsm.client import Clients, connect

PATH = "/openmhsm/principals"
_ERRORS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    principal = commands.add_parser(
        "principal", help="create, list and delete the pool's principals"
    )
    sub = principal.add_subparsers(dest="principal_command", required=True, metavar="COMMAND")
    common = pool_command_parent()
    by_id = argparse.ArgumentParser(add_help=False, parents=[common])
    by_id.add_argument("--client-id", required=True, help="the principal's client id")

    create = sub.add_parser(
        "create", parents=[common], help="a new principal; prints its secret once"
    )
    create.add_argument("--name", "-n", required=True, help="a display name")
    create.add_argument(
        "--managed-identity",
        action="store_true",
        help="a managed identity (prints IDENTITY_HEADER) instead of a service principal",
    )
    create.set_defaults(run=reports_errors(run_create))
    listing = sub.add_parser("list", parents=[common], help="every principal (no secrets)")
    listing.set_defaults(run=reports_errors(run_list))
    delete = sub.add_parser("delete", parents=[by_id], help="remove a principal")
    delete.set_defaults(run=reports_errors(run_delete))
    reset = sub.add_parser(
        "reset-secret", parents=[by_id], help="replace a principal's secret; prints it once"
    )
    reset.set_defaults(run=reports_errors(run_reset_secret))


def call(clients: Clients, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Send one request to the pool with the SDK pipeline; return its JSON. Raises
    HttpResponseError (and its 401/404/409 subclasses) carrying Key Vault's error code."""
    headers = {"Accept": "application/json"}
    request = HttpRequest(method, path, json=body, headers=headers)
    response = clients.key_client.send_request(request)
    if not 200 <= response.status_code < 300:
        map_error(response.status_code, response, _ERRORS)
        raise HttpResponseError(response=response)
    return response.json()


def _with_endpoint(clients: Clients, result: dict[str, Any]) -> dict[str, Any]:
    if "identity_header" in result:
        result["identity_endpoint"] = f"{clients.url}/msi/token"
    return result


def _one(client_id: str) -> str:
    return f"{PATH}/{quote(client_id, safe='')}"


def run_create(args: argparse.Namespace) -> int:
    kind = "managed" if args.managed_identity else "service"
    with connect(pool_of(args)) as clients:
        result = call(clients, "POST", PATH, {"name": args.name, "kind": kind})
        emit(_with_endpoint(clients, result), args.output)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(call(clients, "GET", PATH)["value"], args.output)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        emit(call(clients, "DELETE", _one(args.client_id)), args.output)
    return 0


def run_reset_secret(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        result = call(clients, "POST", _one(args.client_id) + "/reset-secret")
        emit(_with_endpoint(clients, result), args.output)
    return 0
