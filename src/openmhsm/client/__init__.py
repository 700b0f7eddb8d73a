"""Azure SDK clients for a pool, configured from its `pool.json` (DESIGN §9).

    clients = connect("/path/to/data-dir")
    key = clients.key_client.create_rsa_key("k1", hardware_protected=True)
    signature = clients.crypto(key).sign("RS256", digest).signature

Every client trusts the pool CA and retries the idempotent crypto POSTs (sign, verify, encrypt,
decrypt, wrapkey, unwrapkey) on connection errors and gateway statuses, which azure-core's default
policy does not do (DESIGN §2, `retry.py`). A pool extended to a second region (pool.json's
`regions`, or `connect(..., regions=...)`) gets a routing policy in every client and in the
credential: requests go to the first healthy region and fail over to the next (DESIGN §8,
`routing.py`). Constructing clients does no I/O.

The administration clients are built on first use, with the same credential, CA, retry and
routing: `clients.access_control` (KeyVaultAccessControlClient), `clients.backup`
(KeyVaultBackupClient), `clients.settings` (KeyVaultSettingsClient) and
`clients.security_domain` (SecurityDomainClient). `connect("https://127.0.0.1:8443")` reaches a
pool without its pool.json: the CA from `ca_cert=` or REQUESTS_CA_BUNDLE, and the credential from
`credential=` or `DefaultAzureCredential()` (the environment `mhsm env` prints).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey, KeyVaultKeyIdentifier
from azure.keyvault.keys.crypto import CryptographyClient

from openmhsm.client.retry import (
    IDEMPOTENT_METHODS,
    IDEMPOTENT_OPERATIONS,
    RETRY_BACKOFF_FACTOR,
    RETRY_BACKOFF_MAX,
    RETRY_SAFE_WRITES,
    IdempotentRetryPolicy,
    is_idempotent_post,
    may_send_again,
    retry_policy,
)
from openmhsm.client.routing import (
    AsyncRegionRoutingPolicy,
    Region,
    RegionRouter,
    RegionRoutingPolicy,
    credential_policies,
    routing_policies,
)

if TYPE_CHECKING:  # imported on first use: the CLI builds most of these clients rarely
    from azure.keyvault.administration import (
        KeyVaultAccessControlClient,
        KeyVaultBackupClient,
        KeyVaultSettingsClient,
    )
    from azure.keyvault.securitydomain import SecurityDomainClient

__all__ = [
    "CA_BUNDLE_VARIABLE",
    "IDEMPOTENT_METHODS",
    "IDEMPOTENT_OPERATIONS",
    "POOL_JSON",
    "RETRY_BACKOFF_FACTOR",
    "RETRY_BACKOFF_MAX",
    "RETRY_SAFE_WRITES",
    "AsyncRegionRoutingPolicy",
    "Clients",
    "IdempotentRetryPolicy",
    "Region",
    "RegionRouter",
    "RegionRoutingPolicy",
    "connect",
    "credential_from_pool",
    "credential_policies",
    "is_idempotent_post",
    "load_pool_document",
    "may_send_again",
    "regions_of",
    "retry_policy",
    "routing_policies",
]

POOL_JSON = "pool.json"
CA_BUNDLE_VARIABLE = "REQUESTS_CA_BUNDLE"  # where `mhsm env` puts the pool CA for any client
_Client = TypeVar("_Client")
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


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


def credential_from_pool(
    doc: Mapping[str, Any], router: RegionRouter | None = None
) -> ClientSecretCredential:
    """The pool administrator's client-secret credential against the pool's own token issuer;
    with a `router`, its token requests go to the first healthy region.

    Raises ValueError if the document lacks a field (see `load_pool_document`). Getting a token
    later raises azure.core.exceptions.ClientAuthenticationError if the pool refuses it.
    """
    _check_fields(doc)
    admin = doc["admin"]
    routed = {} if router is None else {"policies": credential_policies(router)}
    return ClientSecretCredential(
        doc["tenant_id"],
        admin["client_id"],
        admin["client_secret"],
        authority=doc["authority"],
        disable_instance_discovery=True,
        connection_verify=str(doc["ca_cert"]),
        **routed,
    )


def regions_of(
    doc: Mapping[str, Any], regions: Sequence[str | Region | Mapping[str, Any]] | None = None
) -> list[Region]:
    """The pool's regions in order of preference: `regions` as given, else pool.json's
    `"regions"` (URLs, or `{"url", "ca_cert"}` objects) with the pool's own first (the region
    its pool.json was read from is the nearest), else the pool's URL alone. A region without a
    CA of its own is verified with the pool's `ca_cert` (the regions of a pool share its CA).

    Raises ValueError for a malformed entry, or a list without the pool's own URL.
    """
    _check_fields(doc)
    own = Region(str(doc["url"]).rstrip("/"), str(doc["ca_cert"]))
    listed = doc.get("regions") if regions is None else regions
    return _regions_around(own, listed, nearest_first=regions is None)


def _regions_around(own: Region, listed: Any, *, nearest_first: bool) -> list[Region]:
    """`listed` as Regions (`own` alone if empty), `own` standing in for its origin's entry
    without a CA of its own, and first if `nearest_first`. Raises ValueError as `regions_of`."""
    if not listed:
        return [own]
    if isinstance(listed, str | bytes) or not isinstance(listed, Sequence):
        raise ValueError(f"regions is a list of URLs, not {listed!r}")
    result = [Region.of(entry) for entry in listed]
    result = [own if r.origin == own.origin and r.ca_cert is None else r for r in result]
    if own.origin not in {r.origin for r in result}:
        raise ValueError(f"the regions {[r.url for r in result]} do not include {own.url}")
    if nearest_first:
        result.sort(key=lambda r: r.origin != own.origin)  # stable: the others keep their order
    return result


@dataclass(frozen=True, slots=True)
class Clients:
    """The SDK clients of one pool. Use as a context manager, or call close(), to free sockets."""

    url: str
    ca_cert: str | None  # None: the system's trust store (a URL given without a CA)
    credential: TokenCredential  # the admin's ClientSecretCredential when read from pool.json
    key_client: KeyClient
    router: RegionRouter | None = None  # the regions, when there are more than one
    owns_credential: bool = True  # close() closes it: connect() made it, not the caller
    _built: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments that give one more Azure SDK client this pool's CA, retry
        policy and region routing: `SomeClient(clients.url, clients.credential,
        **clients.client_options())`. New policy instances on every call (one per pipeline)."""
        return _client_options(self.ca_cert, self.router)

    def _lazily(self, name: str, build: Callable[..., _Client]) -> _Client:
        with self._lock:
            if name not in self._built:
                self._built[name] = build(self.url, self.credential, **self.client_options())
            client: _Client = self._built[name]
            return client

    @property
    def access_control(self) -> KeyVaultAccessControlClient:
        """Role definitions and assignments (RBAC), built on first use."""
        from azure.keyvault.administration import KeyVaultAccessControlClient

        return self._lazily("access_control", KeyVaultAccessControlClient)

    @property
    def backup(self) -> KeyVaultBackupClient:
        """Full and selective backup and restore jobs, built on first use."""
        from azure.keyvault.administration import KeyVaultBackupClient

        return self._lazily("backup", KeyVaultBackupClient)

    @property
    def settings(self) -> KeyVaultSettingsClient:
        """The pool's account settings, built on first use."""
        from azure.keyvault.administration import KeyVaultSettingsClient

        return self._lazily("settings", KeyVaultSettingsClient)

    @property
    def security_domain(self) -> SecurityDomainClient:
        """Security domain download, transfer key and upload, built on first use."""
        from azure.keyvault.securitydomain import SecurityDomainClient

        return self._lazily("security_domain", SecurityDomainClient)

    def crypto(self, key: KeyVaultKey | str) -> CryptographyClient:
        """A CryptographyClient for a KeyVaultKey, a key id, or a bare key name (latest version).

        Beware (API §1.4): it runs RSA/EC public-key operations locally, and for oct keys whose
        key_ops allow it runs CBCPAD and KW locally with a random key. Use `key_operation` to make
        sure the pool does the work. Raises ValueError for a malformed key id.
        """
        if isinstance(key, str) and "://" not in key:
            key = f"{self.url}/keys/{quote(key, safe='')}"
        return CryptographyClient(key, self.credential, **self.client_options())

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
        """Close every client built so far, and the credential if connect() made it."""
        with self._lock:
            built = list(self._built.values())
            self._built.clear()
        for client in built:
            client.close()
        self.key_client.close()
        close_credential = getattr(self.credential, "close", None)
        if self.owns_credential and callable(close_credential):
            close_credential()

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    pool: str | Path | Mapping[str, Any],
    *,
    regions: Sequence[str | Region | Mapping[str, Any]] | None = None,
    credential: TokenCredential | None = None,
    ca_cert: str | Path | None = None,
) -> Clients:
    """Clients for the pool described by a data dir, a path to its pool.json, the parsed
    document, or the pool's `https://` URL. No request is sent until a client is used.

    From pool.json, the clients trust its `ca_cert` and authenticate as its administrator. From a
    URL, they trust `ca_cert`, else the bundle named by REQUESTS_CA_BUNDLE, else the system's
    trust store, and authenticate with `DefaultAzureCredential()` (which `mhsm env` configures).
    `ca_cert` and `credential` given here take precedence either way; a credential given here is
    the caller's to close.

    With more than one region (`regions`, else pool.json's; see `regions_of`), every request,
    token requests made by the admin credential included, goes to the first healthy region and
    fails over to the next.

    Raises FileNotFoundError if there is no pool.json, ValueError if it is malformed or a region
    is.
    """
    if isinstance(pool, str) and urlsplit(pool).scheme.lower() in ("https", "http"):
        return _connect_url(pool, regions, credential, ca_cert)
    doc = load_pool_document(pool)
    if ca_cert is not None:
        doc["ca_cert"] = str(ca_cert)
    listed = regions_of(doc, regions)
    router = RegionRouter(listed) if len(listed) > 1 else None
    owned = credential is None
    credential = credential_from_pool(doc, router) if credential is None else credential
    return _clients(str(doc["url"]), str(doc["ca_cert"]), credential, router, owned)


def _connect_url(
    url: str,
    regions: Sequence[str | Region | Mapping[str, Any]] | None,
    credential: TokenCredential | None,
    ca_cert: str | Path | None,
) -> Clients:
    ca = str(ca_cert) if ca_cert is not None else os.environ.get(CA_BUNDLE_VARIABLE) or None
    own = Region(url.rstrip("/"), ca)  # raises ValueError for a path or query
    listed = _regions_around(own, regions, nearest_first=False)
    router = RegionRouter(listed) if len(listed) > 1 else None
    owned = credential is None
    if credential is None:
        verify = {} if ca_cert is None else {"connection_verify": str(ca_cert)}
        credential = DefaultAzureCredential(**verify)
    return _clients(own.url, ca, credential, router, owned)


def _clients(
    url: str,
    ca_cert: str | None,
    credential: TokenCredential,
    router: RegionRouter | None,
    owns_credential: bool,
) -> Clients:
    url = url.rstrip("/")
    key_client = KeyClient(url, credential, **_client_options(ca_cert, router))
    return Clients(
        url=url,
        ca_cert=ca_cert,
        credential=credential,
        key_client=key_client,
        router=router,
        owns_credential=owns_credential,
    )


def _client_options(ca_cert: str | None, router: RegionRouter | None) -> dict[str, Any]:
    return {
        "connection_verify": True if ca_cert is None else ca_cert,
        "retry_policy": retry_policy(),
        "per_retry_policies": routing_policies(router),
    }
