"""The pool's token issuer routes, on the wire and through the real MSAL / azure-identity code."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings
from collections.abc import Iterator
from typing import Any

import msal  # type: ignore[import-untyped]
import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from cryptography.hazmat.primitives.asymmetric import ec
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from urllib3.response import HTTPResponse

from openmhsm.auth.challenge import resource_for_host
from openmhsm.auth.identity import MAX_FORM_BYTES, identity_routes, resource_of_scope
from openmhsm.auth.tokens import TokenService
from openmhsm.services.principals import PrincipalStore, identity_header
from openmhsm.storage.memory import MemoryStorage
from openmhsm.types import Principal

with warnings.catch_warnings():
    # Starlette 1.10 prefers `httpx2`; only `httpx` is installed, which still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
HOST = "hsm.example.test:8443"
BASE = f"https://{HOST}"
RESOURCE = resource_for_host(HOST)  # https://example.test:8443
SCOPE = RESOURCE + "/.default"
ISSUER = f"https://sts.openmhsm/{TENANT}/v2.0"


class RealClock:
    def now(self) -> float:
        return time.time()


class Pool:
    def __init__(self) -> None:
        self.tokens = TokenService(ec.generate_private_key(ec.SECP256R1()), ISSUER, RealClock())
        self.principals = PrincipalStore(MemoryStorage(), RealClock(), scrypt_n=2**4)
        self.app = Starlette(
            routes=identity_routes(self.tokens, self.principals, TENANT, self.audience_ok)
        )
        self.sp, self.sp_secret = asyncio.run(self.principals.create("app-1"))
        self.mi, self.mi_secret = asyncio.run(self.principals.create("mi-1", kind="managed"))

    @staticmethod
    def audience_ok(audience: str) -> bool:
        return audience == RESOURCE

    def validate(self, token: str) -> Principal:
        return self.tokens.validate(token, self.audience_ok)


@pytest.fixture(scope="module")
def pool() -> Pool:
    return Pool()


@pytest.fixture(scope="module")
def client(pool: Pool) -> Iterator[TestClient]:
    with TestClient(pool.app, base_url=BASE) as c:
        yield c


def _token_form(pool: Pool, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "client_id": pool.sp.client_id,
        "client_secret": pool.sp_secret,
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_info": "1",
        "claims": '{"access_token":{"xms_cc":{"values":["CP1"]}}}',
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


# --- discovery -------------------------------------------------------------------------------


def test_openid_configuration(client: TestClient) -> None:
    r = client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration")
    assert r.status_code == 200
    config = r.json()
    assert config["issuer"] == ISSUER
    assert config["token_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/authorize"
    assert config["jwks_uri"] == f"{BASE}/{TENANT}/discovery/v2.0/keys"
    assert config["id_token_signing_alg_values_supported"] == ["ES256"]
    assert config["tenant_region_scope"] is None
    for key in (
        "token_endpoint_auth_methods_supported",
        "response_types_supported",
        "subject_types_supported",
    ):
        assert config[key]


def test_openid_configuration_follows_host(pool: Pool) -> None:
    with TestClient(pool.app, base_url="https://127.0.0.1:18443") as c:
        config = c.get(f"/{TENANT.upper()}/v2.0/.well-known/openid-configuration").json()
    assert config["token_endpoint"] == f"https://127.0.0.1:18443/{TENANT}/oauth2/v2.0/token"


def test_bad_host_header(client: TestClient) -> None:
    r = client.get(f"/{TENANT}/v2.0/.well-known/openid-configuration", headers={"host": "a,b=c"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_unknown_tenant(client: TestClient) -> None:
    for path in ("/other/v2.0/.well-known/openid-configuration", "/other/discovery/v2.0/keys"):
        r = client.get(path)
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_tenant"
        assert "error_description" in r.json()
    r = client.post("/other/oauth2/v2.0/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_tenant"


def test_jwks(client: TestClient, pool: Pool) -> None:
    r = client.get(f"/{TENANT}/discovery/v2.0/keys")
    assert r.status_code == 200
    assert r.json() == pool.tokens.jwks()


# --- client credentials ----------------------------------------------------------------------


def test_client_credentials(client: TestClient, pool: Pool) -> None:
    r = client.post(f"/{TENANT}/oauth2/v2.0/token", data=_token_form(pool))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 300
    assert isinstance(body["ext_expires_in"], int)
    principal = pool.validate(body["access_token"])
    assert principal.client_id == pool.sp.client_id
    assert principal.object_id == pool.sp.object_id


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "unsupported_grant_type"),
        ({"scope": None}, 400, "invalid_scope"),
        ({"scope": RESOURCE}, 400, "invalid_scope"),
        ({"scope": f"{SCOPE} openid"}, 400, "invalid_scope"),
        ({"scope": "https://managedhsm.azure.net/.default"}, 400, "invalid_resource"),
        ({"scope": "/.default"}, 400, "invalid_resource"),
        ({"client_secret": "wrong-secret-value"}, 401, "invalid_client"),
        ({"client_secret": None}, 401, "invalid_client"),
        ({"client_id": "00000000-0000-4000-8000-000000000000"}, 401, "invalid_client"),
        ({"client_id": None}, 401, "invalid_client"),
    ],
)
def test_client_credentials_errors(
    client: TestClient, pool: Pool, overrides: dict[str, str | None], status: int, error: str
) -> None:
    r = client.post(f"/{TENANT}/oauth2/v2.0/token", data=_token_form(pool, **overrides))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert "access_token" not in body
    assert "retry-after" not in r.headers
    for value in ("wrong-secret-value", pool.sp_secret):
        assert value not in r.text


def test_scope_with_trailing_slash_resource(client: TestClient, pool: Pool) -> None:
    r = client.post(
        f"/{TENANT}/oauth2/v2.0/token", data=_token_form(pool, scope=RESOURCE + "//.default")
    )
    assert r.status_code == 200
    assert pool.validate(r.json()["access_token"]).client_id == pool.sp.client_id


def test_managed_identity_may_use_client_credentials(client: TestClient, pool: Pool) -> None:
    form = _token_form(pool, client_id=pool.mi.client_id, client_secret=pool.mi_secret)
    r = client.post(f"/{TENANT}/oauth2/v2.0/token", data=form)
    assert r.status_code == 200
    assert pool.validate(r.json()["access_token"]).kind == "managed"


def test_token_body_shape_errors(client: TestClient, pool: Pool) -> None:
    url = f"/{TENANT}/oauth2/v2.0/token"
    r = client.post(url, json=_token_form(pool))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = client.post(
        url,
        content=b"a=" + b"x" * MAX_FORM_BYTES,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    r = client.post(
        url,
        content=b"grant_type=a&grant_type=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = client.post(
        url, content=b"\xff\xfe=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400


def test_token_body_limit_without_content_length(client: TestClient, pool: Pool) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"grant_type=client_credentials&pad="
        for _ in range(40):
            yield b"x" * 1024

    r = client.post(
        f"/{TENANT}/oauth2/v2.0/token",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413


def test_token_get_not_allowed(client: TestClient) -> None:
    assert client.get(f"/{TENANT}/oauth2/v2.0/token").status_code == 405


# --- managed identity (App Service) ------------------------------------------------------------


def _msi(client: TestClient, header: str | None, **params: str) -> Any:
    query = {"api-version": "2019-08-01", "resource": RESOURCE} | params
    headers = {"Metadata": "true"} | ({"X-IDENTITY-HEADER": header} if header else {})
    return client.get("/msi/token", params=query, headers=headers)


def test_msi_token(client: TestClient, pool: Pool) -> None:
    before = int(time.time())
    r = _msi(client, identity_header(pool.mi.client_id, pool.mi_secret))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert isinstance(body["expires_on"], str) and int(body["expires_on"]) >= before + 3600
    assert body["resource"] == RESOURCE
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == pool.mi.client_id
    assert pool.validate(body["access_token"]).object_id == pool.mi.object_id


@pytest.mark.parametrize("resource", [RESOURCE + "/", SCOPE])
def test_msi_resource_forms(client: TestClient, pool: Pool, resource: str) -> None:
    r = _msi(client, identity_header(pool.mi.client_id, pool.mi_secret), resource=resource)
    assert r.status_code == 200 and r.json()["resource"] == RESOURCE


def test_msi_client_id_must_match(client: TestClient, pool: Pool) -> None:
    header = identity_header(pool.mi.client_id, pool.mi_secret)
    assert _msi(client, header, client_id=pool.mi.client_id.upper()).status_code == 200
    assert _msi(client, header, object_id=pool.mi.object_id).status_code == 200
    assert _msi(client, header, client_id=pool.sp.client_id).status_code == 400
    assert _msi(client, header, mi_res_id="/subscriptions/x").status_code == 400


@pytest.mark.parametrize(
    ("header", "params", "status"),
    [
        (None, {}, 401),
        ("garbage", {}, 401),
        ("WRONG", {}, 401),
        ("OK", {"api-version": "2017-09-01"}, 400),
        ("OK", {"resource": "https://managedhsm.azure.net"}, 400),
        ("OK", {"resource": ""}, 400),
    ],
)
def test_msi_errors(
    client: TestClient, pool: Pool, header: str | None, params: dict[str, str], status: int
) -> None:
    real = identity_header(pool.mi.client_id, pool.mi_secret)
    value = {"OK": real, "WRONG": identity_header(pool.mi.client_id, pool.sp_secret)}.get(
        header or "", header
    )
    r = _msi(client, value, **params)
    assert r.status_code == status
    body = r.json()
    assert body["error"] and body["error_description"]
    assert body["statusCode"] == status and body["message"] == body["error_description"]
    assert pool.mi_secret not in r.text and pool.sp_secret not in r.text


def test_resource_of_scope() -> None:
    assert resource_of_scope("https://a.b:1/.default") == "https://a.b:1"
    assert resource_of_scope("https://a.b:1//.default") == "https://a.b:1"
    assert resource_of_scope("https://a.b:1/") == "https://a.b:1"
    assert resource_of_scope("https://a.b:1") == "https://a.b:1"


# --- the real client libraries, wired to the app in-process -----------------------------------


class MsalHttp:
    """MSAL's HttpClient interface over the in-process Starlette client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        return self.client.get(url, params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        return self.client.post(url, params=params, data=data, headers=headers)

    def close(self) -> None:
        pass


class AsgiAdapter(BaseAdapter):
    """A `requests` adapter that answers from the in-process app (for azure-core's transport)."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        r = self.client.request(
            str(request.method), str(request.url), headers=headers, content=body
        )
        response = requests.Response()
        response.status_code = r.status_code
        response.headers = CaseInsensitiveDict(r.headers)
        response._content = r.content
        response.raw = HTTPResponse(
            body=io.BytesIO(r.content),
            headers=dict(r.headers),
            status=r.status_code,
            preload_content=False,
        )
        response.url = str(request.url)
        response.request = request
        response.reason = r.reason_phrase
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def _transport(client: TestClient) -> RequestsTransport:
    session = requests.Session()
    session.mount("https://", AsgiAdapter(client))
    session.mount("http://", AsgiAdapter(client))
    return RequestsTransport(session=session, session_owner=False)


def test_msal_confidential_client(client: TestClient, pool: Pool) -> None:
    app = msal.ConfidentialClientApplication(
        pool.sp.client_id,
        client_credential=pool.sp_secret,
        authority=f"{BASE}/{TENANT}",
        http_client=MsalHttp(client),
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result
    assert pool.validate(result["access_token"]).client_id == pool.sp.client_id
    bad = msal.ConfidentialClientApplication(
        pool.sp.client_id,
        client_credential="nope",
        authority=f"{BASE}/{TENANT}",
        http_client=MsalHttp(client),
        instance_discovery=False,
    ).acquire_token_for_client(scopes=[SCOPE])
    assert bad["error"] == "invalid_client" and "AADSTS7000215" in bad["error_description"]


def test_msal_managed_identity(
    client: TestClient, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{BASE}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", identity_header(pool.mi.client_id, pool.mi_secret))
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    mi = msal.ManagedIdentityClient(
        msal.SystemAssignedManagedIdentity(), http_client=MsalHttp(client)
    )
    result = mi.acquire_token_for_client(resource=RESOURCE)
    assert "access_token" in result, result
    assert pool.validate(result["access_token"]).object_id == pool.mi.object_id


def test_azure_identity_client_secret_credential(client: TestClient, pool: Pool) -> None:
    credential = ClientSecretCredential(
        TENANT,
        pool.sp.client_id,
        pool.sp_secret,
        authority=BASE,
        disable_instance_discovery=True,
        transport=_transport(client),
    )
    # The scope and tenant the Key Vault challenge policy passes (API.md §2.1.5).
    token = credential.get_token(SCOPE, tenant_id=TENANT, enable_cae=True)
    assert pool.validate(token.token).client_id == pool.sp.client_id
    assert token.expires_on > time.time() + 3000


def test_azure_identity_managed_identity_credential(
    client: TestClient, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{BASE}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", identity_header(pool.mi.client_id, pool.mi_secret))
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    monkeypatch.delenv("IMDS_ENDPOINT", raising=False)
    credential = ManagedIdentityCredential(transport=_transport(client))
    token = credential.get_token(SCOPE)
    assert pool.validate(token.token).object_id == pool.mi.object_id


def test_token_is_opaque_base64url_jwt(client: TestClient, pool: Pool) -> None:
    token = client.post(f"/{TENANT}/oauth2/v2.0/token", data=_token_form(pool)).json()[
        "access_token"
    ]
    for part in token.split("."):
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
