"""Azure SDK clients for a pool, configured from its `pool.json` (DESIGN §9).

    clients = connect("/path/to/data-dir")
    key = clients.key_client.create_rsa_key("k1", hardware_protected=True)
    signature = clients.crypto(key).sign("RS256", digest).signature

Every client trusts the pool CA and retries the idempotent crypto POSTs (sign, verify, encrypt,
decrypt, wrapkey, unwrapkey) on connection errors and gateway statuses, which azure-core's default
policy does not do (DESIGN §2). Constructing clients does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey, KeyVaultKeyIdentifier
from azure.keyvault.keys.crypto import CryptographyClient

POOL_JSON = "pool.json"
# The REST names of the key operations that are safe to send twice (API §1.1).
IDEMPOTENT_OPERATIONS = frozenset({"sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey"})
RETRY_SAFE_WRITES = frozenset({"create", "rotate"})
_DEFAULT_RETRY_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE"})
# A pool replaces a dead partition in seconds: minutes of back-off would only delay the error.
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX = 8
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


class IdempotentRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy (exponential back-off) that also retries POSTs of idempotent key
    operations and of create/rotate (made idempotent by the pool), so a request in flight on a
    partition that dies is sent again to a live one. Other POSTs keep azure-core's rules."""

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if is_idempotent_post(request.http_request.method, request.http_request.url):
            request.context.options.setdefault(
                "retry_on_methods", _DEFAULT_RETRY_METHODS | {"POST"}
            )
        return super().send(request)


def is_idempotent_post(method: str, url: str) -> bool:
    """True for `POST .../keys/{name}/{version}/{operation}` with an idempotent operation
    (the version may be empty: `/keys/{name}//sign`), and for `POST .../keys/{name}/create`
    and `/rotate`: the pool answers a retry of one of those (same `x-ms-client-request-id`,
    which azure-core keeps across retries) with the version the first attempt made."""
    if method.upper() != "POST":
        return False
    parts = urlsplit(url).path.split("/")
    if len(parts) >= 4 and parts[-3] == "keys" and parts[-1].lower() in RETRY_SAFE_WRITES:
        return True
    return len(parts) >= 5 and parts[-4] == "keys" and parts[-1].lower() in IDEMPOTENT_OPERATIONS


def retry_policy() -> IdempotentRetryPolicy:
    """A new policy for one client (a policy instance belongs to one pipeline)."""
    return IdempotentRetryPolicy(
        retry_backoff_factor=RETRY_BACKOFF_FACTOR, retry_backoff_max=RETRY_BACKOFF_MAX
    )


def load_pool_document(pool: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The pool.json document from a data dir, a path to pool.json, or an already parsed dict.

    Raises FileNotFoundError if there is no pool.json there, and ValueError if it is not JSON or
    lacks a field clients need (url, ca_cert, tenant_id, authority, admin.client_id,
    admin.client_secret).
    """
    if isinstance(pool, Mapping):
        doc = dict(pool)
    else:
        path = Path(pool)
        if path.is_dir():
            path = path / POOL_JSON
        if not path.is_file():
            raise FileNotFoundError(f"no pool.json at {path}; start the pool with `mhsm up`")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise ValueError(f"{path} does not hold a JSON object")
    _check_fields(doc)
    return doc


def _check_fields(doc: Mapping[str, Any]) -> None:
    missing = [f for f in ("url", "ca_cert", "tenant_id", "authority") if not doc.get(f)]
    admin = doc.get("admin")
    if not isinstance(admin, Mapping):
        missing.append("admin")
    else:
        missing += [f"admin.{f}" for f in ("client_id", "client_secret") if not admin.get(f)]
    if missing:
        raise ValueError(f"pool.json lacks {', '.join(missing)}")


def credential_from_pool(doc: Mapping[str, Any]) -> ClientSecretCredential:
    """The pool administrator's client-secret credential against the pool's own token issuer.

    Raises ValueError if the document lacks a field (see `load_pool_document`). Getting a token
    later raises azure.core.exceptions.ClientAuthenticationError if the pool refuses it.
    """
    _check_fields(doc)
    admin = doc["admin"]
    return ClientSecretCredential(
        doc["tenant_id"],
        admin["client_id"],
        admin["client_secret"],
        authority=doc["authority"],
        disable_instance_discovery=True,
        connection_verify=str(doc["ca_cert"]),
    )


@dataclass(frozen=True, slots=True)
class Clients:
    """The SDK clients of one pool. Use as a context manager, or call close(), to free sockets."""

    url: str
    ca_cert: str
    credential: ClientSecretCredential
    key_client: KeyClient

    def crypto(self, key: KeyVaultKey | str) -> CryptographyClient:
        """A CryptographyClient for a KeyVaultKey, a key id, or a bare key name (latest version).

        Beware (API §1.4): it runs RSA/EC public-key operations locally, and for oct keys whose
        key_ops allow it runs CBCPAD and KW locally with a random key. Use `key_operation` to make
        sure the pool does the work. Raises ValueError for a malformed key id.
        """
        if isinstance(key, str) and "://" not in key:
            key = f"{self.url}/keys/{quote(key, safe='')}"
        return CryptographyClient(
            key, self.credential, connection_verify=self.ca_cert, retry_policy=retry_policy()
        )

    def key_operation(
        self, key_id: str, operation: str, parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        """POST one key operation (`sign`, `verify`, `encrypt`, `decrypt`, `wrapkey`,
        `unwrapkey`) to the pool and return its JSON result. `parameters` is the wire body
        (API §1.4: "alg", and base64url "value", "iv", "aad", "tag", "digest"). Unlike
        CryptographyClient, never runs anything locally. `key_id` is a key id or a bare name;
        only its name and version are used, and the request goes to this pool.

        Raises ValueError for an unknown operation or a malformed key id, ResourceNotFoundError
        (404), ClientAuthenticationError (401) and HttpResponseError (any other non-200), whose
        `.error.code` is Key Vault's error code.
        """
        if operation not in IDEMPOTENT_OPERATIONS:
            raise ValueError(f"unknown key operation {operation!r}")
        if "://" not in key_id:
            key_id = f"{self.url}/keys/{key_id}"
        ident = KeyVaultKeyIdentifier(key_id)
        path = f"/keys/{quote(ident.name, safe='')}/{quote(ident.version or '', safe='')}"
        request = HttpRequest(
            "POST",
            f"{path}/{operation}",
            json=dict(parameters),
            headers={"Accept": "application/json"},
        )
        response = self.key_client.send_request(request)
        if response.status_code != 200:
            map_error(response.status_code, response, _ERROR_MAP)
            raise HttpResponseError(response=response)
        result: dict[str, Any] = response.json()
        return result

    def close(self) -> None:
        self.key_client.close()
        self.credential.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(pool: str | Path | Mapping[str, Any]) -> Clients:
    """Clients for the pool described by a data dir, a path to its pool.json, or the parsed
    document. No request is sent until a client is used.

    Raises FileNotFoundError if there is no pool.json, ValueError if it is malformed.
    """
    doc = load_pool_document(pool)
    ca_cert = str(doc["ca_cert"])
    credential = credential_from_pool(doc)
    url = str(doc["url"]).rstrip("/")
    key_client = KeyClient(url, credential, connection_verify=ca_cert, retry_policy=retry_policy())
    return Clients(url=url, ca_cert=ca_cert, credential=credential, key_client=key_client)
