"""The Key Vault authentication challenge (the `WWW-Authenticate` of a 401) and `Bearer` parsing.

The SDKs (`ChallengeAuthPolicy`, API.md §2.1) take the token audience from the challenge's
`resource` and, by default, require the vault host to be a *proper subdomain* of it, port included
(`verify_challenge_resource`). So the resource is the request host with its first label removed,
port kept (DESIGN §6):

- `hsm1.example.com:8443` → `https://example.com:8443` (accepted by the SDK);
- `127.0.0.1:8443` → `https://0.0.1:8443` (accepted: `127.0.0.1:8443` ends with `.0.0.1:8443`);
- `localhost:8443` (a single label) → `https://localhost:8443`. No resource can pass the SDK check
  for a one-label host; clients must use a dotted name or pass `verify_challenge_resource=False`.
- `[::1]:8443` (IPv6) → `https://[::1]:8443`. No resource can pass either: the SDK needs the request
  netloc to end with `.` + the resource netloc, a bracketed address has no dot, and a suffix of one
  with an embedded IPv4 part (`0.1]:8443`) makes `urlparse` raise "Invalid IPv6 URL". Same advice.

The SDK splits the challenge parameters on `,` and then `=`, so no value may contain either.
"""

from __future__ import annotations

import ipaddress
import re

from openmhsm import errors

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE = re.compile(
    rf"(?P<name>{_LABEL}(?:\.{_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?"
    r"|\[(?P<v6>[0-9a-f:.]{2,45})\](?::(?P<v6port>[0-9]{1,5}))?"
)
_MAX_HOST = 262  # 253 for a DNS name plus ":" and a five-digit port
# Characters the SDK's challenge parser (or an HTTP header) cannot carry inside a value.
_FORBIDDEN = re.compile(r'[,="\s\\]')


def normalize_host(host: str) -> str:
    """Validate a `Host` header value (`host[:port]`, IPv6 in brackets) and return it lower-cased.

    Raises `errors.BadRequest` if it is not a plain DNS name, IPv4 or bracketed IPv6 address with
    an optional port in 1..65535.
    """
    # HTTP's optional whitespace only: str.strip() also drops "\x85", "\xa0", "\x1c".."\x1f", so a
    # Host holding them passed here, then broke the challenge (a 500 for an anonymous request).
    text = host.strip(" \t").lower()
    match = _HOST_RE.fullmatch(text) if len(text) <= _MAX_HOST else None
    if match is None:
        raise errors.BadRequest("The request's Host header is not a valid host name.")
    port = match.group("port") or match.group("v6port")
    if port is not None and not 0 < int(port) < 65536:
        raise errors.BadRequest("The request's Host header has an invalid port.")
    v6 = match.group("v6")
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            raise errors.BadRequest("The request's Host header is not a valid host name.") from None
    return text


def _split_port(host: str) -> tuple[str, str]:
    """A normalized `host[:port]` → (host, ":port" or ""); an IPv6 address keeps its brackets."""
    if host.startswith("["):
        end = host.index("]") + 1
        return host[:end], host[end:]
    name, sep, port = host.partition(":")
    return name, sep + port


def resource_for_host(host: str) -> str:
    """The challenge resource (token audience) for a request to `host`.

    The first label is removed and the port kept: `hsm1.example.com:8443` → `https://example.com:8443`.
    A port of 443 is dropped (the SDK treats it as the default). One-label hosts and IPv6 addresses
    are returned whole (the SDK check cannot pass for them; see the module docstring).
    Raises `errors.BadRequest` for an invalid `Host` header.
    """
    name, port = _split_port(normalize_host(host))
    if port == ":443":
        port = ""
    if not name.startswith("[") and "." in name:
        name = name.split(".", 1)[1]
    return f"https://{name}{port}"


def authority_for_host(host: str) -> str:
    """The issuer URL a client should see for a request to `host`: `https://<host[:port]>`.

    Raises `errors.BadRequest` for an invalid `Host` header.
    """
    return f"https://{normalize_host(host)}"


def challenge_header(host: str, authority: str, tenant_id: str) -> str:
    """The `WWW-Authenticate` value for a 401 to a request on `host`.

    `authority` is the URL of the pool's token issuer as the client sees it (normally
    `authority_for_host(host)`). Raises `errors.BadRequest` for an invalid `Host` header and
    ValueError if `authority` or `tenant_id` holds a character the SDK parser cannot carry.
    """
    resource = resource_for_host(host)
    authorization = f"{authority.rstrip('/')}/{tenant_id}"
    if _FORBIDDEN.search(authorization) or "/" in tenant_id or not tenant_id:
        raise ValueError("authority and tenant id must not contain ',', '=', quotes or spaces")
    return f'Bearer authorization="{authorization}", resource="{resource}"'


_WHITESPACE = re.compile(r"\s")


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), or None."""
    if not authorization_header:
        return None
    parts = authorization_header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1].strip()
    if not token or _WHITESPACE.search(token):  # a regex: a loop over each char is a hot spot
        return None
    return token
