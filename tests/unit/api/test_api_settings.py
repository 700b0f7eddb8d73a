"""`/settings` over HTTP (API §3.3): the unpaged list, get, PATCH with a string value, and Key
Vault-shaped errors for unknown names and bad values."""

from __future__ import annotations

from unit_stack import ApiHarness

API = "api-version=2025-07-01"
ARM = "AllowKeyManagementOperationsThroughARM"


def url(path: str) -> str:
    return f"{path}?{API}"


def test_list_is_not_paged(api: ApiHarness) -> None:
    response = api.client.get(url("/settings"))
    assert response.status_code == 200
    assert response.json() == {"settings": [{"name": ARM, "value": "false", "type": "boolean"}]}


def test_get_and_patch(api: ApiHarness) -> None:
    assert api.client.get(url(f"/settings/{ARM}")).json()["value"] == "false"
    response = api.client.patch(url(f"/settings/{ARM.lower()}"), json={"value": "True"})
    assert response.status_code == 200
    assert response.json() == {"name": ARM, "value": "true", "type": "boolean"}
    assert api.client.get(url(f"/settings/{ARM}")).json()["value"] == "true"
    assert api.client.get(url("/settings")).json()["settings"][0]["value"] == "true"


def test_unknown_setting(api: ApiHarness) -> None:
    for response in (
        api.client.get(url("/settings/Nope")),
        api.client.patch(url("/settings/Nope"), json={"value": "true"}),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "NotFound"
        assert error["innererror"]["code"] == "SettingNotFound"


def test_bad_values(api: ApiHarness) -> None:
    for body in ({"value": "maybe"}, {"value": True}, {}):
        response = api.client.patch(url(f"/settings/{ARM}"), json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "BadParameter"
    response = api.client.patch(url(f"/settings/{ARM}"), content=b"not json")
    assert response.status_code == 400
    assert api.client.get(url(f"/settings/{ARM}")).json()["value"] == "false"


def test_needs_api_version_and_token(api: ApiHarness) -> None:
    assert api.client.get("/settings").status_code == 400
    assert (
        api.send_anonymous("PATCH", url(f"/settings/{ARM}"), json={"value": "true"}).status_code
        == 401
    )
    assert api.client.get(url(f"/settings/{ARM}")).json()["value"] == "false"
