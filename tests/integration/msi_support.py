"""An App Service-style managed identity endpoint, standing in for Azure's identity platform.

azure-identity's ManagedIdentityCredential asks `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&
resource=<resource>` with header `X-IDENTITY-HEADER: $IDENTITY_HEADER`. This endpoint answers with
a JWT that Azurite's `--oauth basic` accepts: it checks the issuer prefix, the audience and the
lifetime, not the signature, so a throwaway ES256 key signs it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

API_VERSION = "2019-08-01"
TOKEN_SECONDS = 3600
TENANT = "72f988bf-0000-4000-8000-0000000000aa"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    """An ES256 JWT of `claims`."""
    header = _b64u(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = _b64u(json.dumps(claims).encode())
    der = key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{header}.{payload}.{_b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass
class Msi:
    """The running endpoint: `env` is what a process needs to use it."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    secret: str
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    tokens_issued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/msi/token"

    @property
    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def issue(self, resource: str) -> dict[str, str]:
        now = int(time.time())
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + TOKEN_SECONDS,
            "oid": self.principal_id,
            "sub": self.principal_id,
            "tid": TENANT,
        }
        with self._lock:
            self.tokens_issued += 1
        return {
            "access_token": sign_jwt(self.key, claims),
            "expires_on": str(now + TOKEN_SECONDS),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.principal_id,
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _handler(msi_ref: list[Msi]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            msi = msi_ref[0]
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            resource = query.get("resource", [""])[0]
            if url.path != "/msi/token":
                self._reply(404, {"error": "not found"})
            elif not secrets.compare_digest(self.headers.get("X-IDENTITY-HEADER", ""), msi.secret):
                self._reply(401, {"statusCode": 401, "message": "Unauthorized"})
            elif query.get("api-version") != [API_VERSION] or not resource:
                self._reply(400, {"statusCode": 400, "message": "Bad request"})
            else:
                self._reply(200, msi.issue(resource))

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def start_msi_endpoint() -> Msi:
    """Serve the endpoint on 127.0.0.1 and a free port, in a background thread."""
    msi_ref: list[Msi] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(msi_ref))
    thread = threading.Thread(target=server.serve_forever, name="msi-endpoint", daemon=True)
    msi = Msi(server, thread, secrets.token_urlsafe(16))
    msi_ref.append(msi)
    thread.start()
    return msi
