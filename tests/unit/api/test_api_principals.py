"""`/openmhsm/principals` (OpenMHSM's own admin endpoint): list without secrets, create with a
secret shown once, reset-secret, delete, and the token endpoint following every change."""

from __future__ import annotations

from typing import Any

from unit_stack import RESOURCE, TENANT, ApiHarness

API = "api-version=2025-07-01"
PATH = "/openmhsm/principals"


def url(path: str) -> str:
    return f"{path}?{API}"


def token_for(api: ApiHarness, client_id: str, secret: str) -> Any:
    form = {
        "client_id": client_id,
        "client_secret": secret,
        "grant_type": "client_credentials",
        "scope": f"{RESOURCE}/.default",
    }
    request = api.client.build_request("POST", f"/{TENANT}/oauth2/v2.0/token", data=form)
    del request.headers["Authorization"]
    return api.client.send(request)


def test_create_service_principal(api: ApiHarness) -> None:
    response = api.client.post(url(PATH), json={"name": "app1", "kind": "service"})
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"client_id", "object_id", "name", "kind", "client_secret"}
    assert body["name"] == "app1" and body["kind"] == "service"
    assert token_for(api, body["client_id"], body["client_secret"]).status_code == 200


def test_create_managed_identity(api: ApiHarness) -> None:
    body = api.client.post(url(PATH), json={"name": "mi1", "kind": "managed"}).json()
    assert body["kind"] == "managed"
    assert body["identity_header"] == f"{body['client_id']}.{body['client_secret']}"
    request = api.client.build_request(
        "GET",
        "/msi/token",
        params={"api-version": "2019-08-01", "resource": RESOURCE},
        headers={"X-IDENTITY-HEADER": body["identity_header"], "Metadata": "true"},
    )
    del request.headers["Authorization"]
    assert api.client.send(request).status_code == 200


def test_kind_defaults_to_service(api: ApiHarness) -> None:
    assert api.client.post(url(PATH), json={"name": "plain"}).json()["kind"] == "service"


def test_list_never_shows_secrets(api: ApiHarness) -> None:
    created = api.client.post(url(PATH), json={"name": "app2"}).json()
    response = api.client.get(url(PATH))
    assert response.status_code == 200
    listed = response.json()["value"]
    names = {p["name"] for p in listed}
    assert {"admin", "app2"} <= names
    assert all(set(p) == {"client_id", "object_id", "name", "kind"} for p in listed)
    assert created["client_secret"] not in response.text


def test_reset_secret(api: ApiHarness) -> None:
    created = api.client.post(url(PATH), json={"name": "app3"}).json()
    response = api.client.post(url(f"{PATH}/{created['client_id'].upper()}/reset-secret"))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    reset = response.json()
    assert reset["client_id"] == created["client_id"]
    assert reset["client_secret"] != created["client_secret"]
    assert token_for(api, created["client_id"], created["client_secret"]).status_code == 401
    assert token_for(api, created["client_id"], reset["client_secret"]).status_code == 200


def test_delete(api: ApiHarness) -> None:
    created = api.client.post(url(PATH), json={"name": "app4"}).json()
    response = api.client.delete(url(f"{PATH}/{created['client_id']}"))
    assert response.status_code == 200
    assert response.json() == {k: v for k, v in created.items() if k != "client_secret"}
    assert token_for(api, created["client_id"], created["client_secret"]).status_code == 401
    again = api.client.delete(url(f"{PATH}/{created['client_id']}"))
    assert again.status_code == 404
    assert again.json()["error"]["innererror"]["code"] == "PrincipalNotFound"


def test_cannot_delete_itself(api: ApiHarness) -> None:
    assert api.stack.admin is not None
    response = api.client.delete(url(f"{PATH}/{api.stack.admin.client_id}"))
    assert response.status_code == 400
    assert api.call(api.stack.principals.get, api.stack.admin.client_id) is not None


def test_unknown_ids(api: ApiHarness) -> None:
    for client_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        for method, path in (("DELETE", ""), ("POST", "/reset-secret")):
            response = api.client.request(method, url(f"{PATH}/{client_id}{path}"))
            assert response.status_code == 404, (method, client_id)
            assert response.json()["error"]["code"] == "NotFound"


def test_bad_requests(api: ApiHarness) -> None:
    for body in ({"name": "bad name!"}, {"name": "x", "kind": "user"}, {}, {"name": 3}):
        response = api.client.post(url(PATH), json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "BadParameter"


def test_needs_api_version_and_token(api: ApiHarness) -> None:
    assert api.client.get(PATH).status_code == 400
    assert api.send_anonymous("POST", url(PATH), json={"name": "x"}).status_code == 401
    assert api.send_anonymous("GET", url(PATH)).status_code == 401
