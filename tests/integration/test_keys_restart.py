"""Keys survive a restart of `mhsm up --dev` on the same data dir: same keys, same versions, same
material (old signatures still verify), deleted keys still deleted, and the stop is graceful."""

from __future__ import annotations

import hashlib
import http.client
import signal
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from azure.keyvault.keys import JsonWebKey, KeyClient, KeyRotationPolicy
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from keys_support import (
    API,
    b64u,
    ec_public,
    pool_token,
    raw_client,
    raw_to_der,
    release_connections,
    rsa_public,
    sdk_key_client,
    unb64u,
)

if TYPE_CHECKING:
    from dev_pool import DevPool

DIGEST = hashlib.sha256(b"signed before the restart").digest()
AES_KEY = bytes(range(100, 132))


def _snapshot(client: KeyClient) -> dict[str, Any]:
    """Every live key with every version's public JWK, and the deleted keys."""
    keys = {}
    for props in client.list_properties_of_keys():
        versions = {}
        for v in client.list_properties_of_key_versions(props.name):
            key = client.get_key(props.name, v.version)
            versions[v.version] = (
                key.key.kty,
                key.key.n,
                key.key.e,
                key.key.crv,
                key.key.x,
                key.key.y,
                tuple(key.key_operations),
                key.properties.tags,
                key.properties.enabled,
                key.properties.created_on,
            )
        keys[props.name] = (client.get_key(props.name).properties.version, versions)
    deleted = {
        d.name: client.get_deleted_key(d.name).properties.version
        for d in client.list_deleted_keys()
    }
    return {"keys": keys, "deleted": deleted}


def _restart(pool: DevPool) -> float:
    started = time.monotonic()
    code = pool.stop(signal.SIGTERM)
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), f"unclean exit {code}: {pool.log_text()[-2000:]}"
    pool.start()
    return elapsed


def test_keys_survive_restart(dev_pool: DevPool) -> None:
    with sdk_key_client(dev_pool) as client, dev_pool.credential() as credential:
        rsa_v1 = client.create_rsa_key(
            "restart-rsa", size=2048, hardware_protected=True, tags={"keep": "me"}
        )
        client.rotate_key("restart-rsa")
        ec_key = client.create_ec_key("restart-ec", curve="P-384", hardware_protected=True)
        client.update_key_properties("restart-ec", key_operations=["sign", "verify"], enabled=True)
        client.import_key("restart-oct", JsonWebKey(kty="oct-HSM", k=AES_KEY))
        client.update_key_rotation_policy("restart-ec", KeyRotationPolicy(expires_in="P45D"))
        client.create_ec_key("restart-deleted", hardware_protected=True)
        client.begin_delete_key("restart-deleted").wait()
        client.create_ec_key("Restart-Case", hardware_protected=True)
        with CryptographyClient(rsa_v1, credential, connection_verify=dev_pool.ca) as crypto:
            rsa_signature = crypto.sign(SignatureAlgorithm.rs256, DIGEST).signature
        digest384 = hashlib.sha384(b"ec").digest()
        with CryptographyClient(ec_key, credential, connection_verify=dev_pool.ca) as crypto:
            ec_signature = crypto.sign(SignatureAlgorithm.es384, digest384).signature
        before = _snapshot(client)
    with raw_client(dev_pool) as http:
        sealed = http.post(
            "/keys/restart-oct//encrypt",
            params=API,
            json={"alg": "A256GCM", "value": b64u(b"kept"), "aad": b64u(b"x")},
        )
        assert sealed.status_code == 200, sealed.text
    old_token = pool_token(dev_pool)
    release_connections()

    url = dev_pool.url
    _restart(dev_pool)
    assert dev_pool.url == url

    with sdk_key_client(dev_pool) as client, dev_pool.credential() as credential:
        assert _snapshot(client) == before
        assert client.get_key_rotation_policy("restart-ec").expires_in == "P45D"
        assert client.get_key("restart-case").name == "Restart-Case", "display name kept"
        # Material is the same: the old signatures verify, locally and on the pool.
        old = client.get_key("restart-rsa", rsa_v1.properties.version)
        rsa_public(old.key).verify(
            rsa_signature, DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256())
        )
        ec_public(client.get_key("restart-ec").key).verify(
            raw_to_der(ec_signature), digest384, ec.ECDSA(Prehashed(hashes.SHA384()))
        )
        with CryptographyClient(old.id, credential, connection_verify=dev_pool.ca) as crypto:
            again = crypto.sign(SignatureAlgorithm.rs256, DIGEST).signature
        assert again == rsa_signature, "PKCS#1 v1.5 is deterministic: same key, same bytes"
        # A deleted key is still deleted, and still recoverable.
        recovered = client.begin_recover_deleted_key("restart-deleted").result()
        assert recovered.properties.version == before["deleted"]["restart-deleted"]
    # The token issued before the restart is still accepted (the signing key is the domain's).
    with raw_client(dev_pool, old_token) as http:
        body = sealed.json()
        r = http.post(
            "/keys/restart-oct//decrypt",
            params=API,
            json={
                "alg": "A256GCM",
                "value": body["value"],
                "iv": body["iv"],
                "tag": body["tag"],
                "aad": body["aad"],
            },
        )
        assert r.status_code == 200, r.text
        assert unb64u(r.json()["value"]) == b"kept"
        r = http.post(
            f"/keys/restart-rsa/{rsa_v1.properties.version}/verify",
            params=API,
            json={"alg": "RS256", "digest": b64u(DIGEST), "value": b64u(rsa_signature)},
        )
        assert r.json() == {"value": True}
    iv, tag = unb64u(body["iv"]), unb64u(body["tag"])
    assert AESGCM(AES_KEY).decrypt(iv, unb64u(body["value"]) + tag, b"x") == b"kept"
    release_connections()


def test_second_restart_and_writes_after_it(dev_pool: DevPool) -> None:
    with sdk_key_client(dev_pool) as client:
        client.create_ec_key("after-restart", hardware_protected=True)
        versions_before = len(list(client.list_properties_of_key_versions("restart-rsa")))
    release_connections()
    _restart(dev_pool)
    with sdk_key_client(dev_pool) as client:
        assert client.get_key("after-restart").key.crv == "P-256"
        client.rotate_key("restart-rsa")
        assert (
            len(list(client.list_properties_of_key_versions("restart-rsa"))) == versions_before + 1
        )
    release_connections()


def test_sigterm_with_an_idle_keep_alive_connection_stops_promptly(dev_pool: DevPool) -> None:
    """DESIGN §2: a graceful stop closes keep-alive connections. A client that keeps an idle
    pooled connection (every long-lived SDK client does) must not hold the stop for the drain
    timeout."""
    with raw_client(dev_pool) as http:
        assert http.get("/keys", params=API).status_code == 200  # connection now idle, pooled
        elapsed = _restart(dev_pool)
    assert elapsed < 4.5, f"SIGTERM took {elapsed:.1f} s with one idle keep-alive connection"


def test_a_request_on_an_idle_connection_during_the_stop_is_answered(dev_pool: DevPool) -> None:
    """DESIGN §2: a graceful stop loses no request. A client that sends on a pooled keep-alive
    connection just as the stop begins gets its answer, marked `Connection: close`, instead of a
    dropped connection that azure-core would not retry for a POST or PATCH."""
    token = pool_token(dev_pool)
    host, port = dev_pool.url.removeprefix("https://").rsplit(":", 1)
    tls = ssl.create_default_context(cafile=dev_pool.ca)
    conn = http.client.HTTPSConnection(host, int(port), context=tls, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        conn.request("GET", "/keys?api-version=7.6", headers=headers)
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("connection") != "close"
        assert dev_pool.proc is not None
        dev_pool.proc.send_signal(signal.SIGTERM)  # the connection is idle in the client's hands
        _wait_listener_closed(host, int(port))  # the stop has begun
        conn.request("GET", "/keys?api-version=7.6", headers=headers)
        second = conn.getresponse()
        second.read()
    finally:
        conn.close()
    assert second.status == 200
    assert second.getheader("connection") == "close"
    _restart(dev_pool)  # waits for the exit, checks it was clean, starts again


def _wait_listener_closed(host: str, port: int) -> None:
    """Until a new connection is refused: the first thing a stop does is close its listener."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.01)
    raise AssertionError("the pool still accepts connections 10 s after SIGTERM")
