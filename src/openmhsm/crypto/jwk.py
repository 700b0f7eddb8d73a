"""JWK <-> key objects, and the base64url codec every JWK field uses (RFC 7517, RFC 7518 §6).

`KeyMaterial` is the one container the rest of `crypto/` works on. Parsing is strict: anything
malformed raises `BadParameter`, and no message ever quotes a field's value.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openmhsm.errors import BadParameter

KeyType = Literal["RSA", "EC", "oct"]

_B64U_BODY = re.compile(r"[A-Za-z0-9_-]*")
_KTY_ALIASES: dict[str, KeyType] = {
    "RSA": "RSA",
    "RSA-HSM": "RSA",
    "EC": "EC",
    "EC-HSM": "EC",
    "oct": "oct",
    "oct-HSM": "oct",
}
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-256K": ec.SECP256K1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_ALIASES = {"SECP256K1": "P-256K"}
RSA_SIZES = (2048, 3072, 4096)
OCT_SIZES = (128, 192, 256)
_RECOVERY_ATTEMPTS = 32  # a valid key fails all of them with probability at most 2**-32


def b64u_encode(data: bytes) -> str:
    """Encode bytes as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Decode base64url, with or without '=' padding.

    Raises BadParameter for a non-string, a character outside the base64url alphabet (standard
    base64 '+' and '/' included), misplaced or wrong padding, or an impossible length.
    """
    if not isinstance(text, str):
        raise BadParameter("Expected a base64url string")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if not _B64U_BODY.fullmatch(body):
        raise BadParameter("Value is not valid base64url")
    if len(body) % 4 == 1:
        raise BadParameter("Value has an invalid base64url length")
    if padding and (padding > 2 or len(text) % 4 != 0):
        raise BadParameter("Value has invalid base64url padding")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:  # unreachable after the checks; kept as a guard
        raise BadParameter("Value is not valid base64url") from exc


def int_to_b64u(n: int) -> str:
    """Encode a non-negative integer as base64url of its minimal big-endian bytes (0 -> 'AA').

    Raises BadParameter for a negative integer.
    """
    if n < 0:
        raise BadParameter("Cannot encode a negative integer")
    return b64u_encode(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))


def base_kty(kty: object) -> KeyType:
    """Map a Key Vault kty ("RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM") to its base type.

    Raises BadParameter for any other value.
    """
    base = _KTY_ALIASES.get(kty) if isinstance(kty, str) else None
    if base is None:
        raise BadParameter(f"Invalid kty value: {_shown(kty)}")
    return base


def canonical_curve(crv: object) -> str:
    """Return the canonical curve name for a JWK crv ("SECP256K1" becomes "P-256K").

    Raises BadParameter for a curve Managed HSM does not support.
    """
    name = _CURVE_ALIASES.get(crv, crv) if isinstance(crv, str) else None
    if name not in CURVES:
        raise BadParameter(f"Invalid crv value: {_shown(crv)}: allowed {', '.join(CURVES)}")
    return str(name)


def coordinate_size(crv: str) -> int:
    """Byte length of one coordinate (and of the private scalar) on the named curve."""
    return (CURVES[crv].key_size + 7) // 8


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | bytes


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A private key and its type: RSA, EC (with its curve) or oct (raw AES/HMAC key bytes).

    Constructing one with mismatched parts raises BadParameter. The key never appears in repr.
    """

    kty: KeyType
    private: PrivateKey = field(repr=False)
    crv: str | None = None
    # The public JWK, worked out once: every GET of a key and every create answers with it.
    _public: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        private = self.private
        if self.kty == "EC" and isinstance(private, ec.EllipticCurvePrivateKey):
            actual = _curve_name(private.curve)
            if self.crv is not None and canonical_curve(self.crv) != actual:
                raise BadParameter(f"Key material does not match curve {_shown(self.crv)}")
            object.__setattr__(self, "crv", actual)
            return
        valid = (self.kty == "RSA" and isinstance(private, rsa.RSAPrivateKey)) or (
            self.kty == "oct" and isinstance(private, bytes) and len(private) > 0
        )
        if not valid or self.crv is not None:
            raise BadParameter(f"Key material does not match key type {_shown(self.kty)}")

    @property
    def size(self) -> int:
        """RSA modulus bits, EC curve bits (521 for P-521) or oct key bits."""
        if isinstance(self.private, bytes):
            return len(self.private) * 8
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.key_size
        return self.private.curve.key_size


def public_jwk(km: KeyMaterial) -> dict[str, str]:
    """The public JWK: RSA {kty,n,e}, EC {kty,crv,x,y} (fixed-length coordinates), oct {kty}.
    A new dict each time, the caller's to change."""
    if km._public is None:
        object.__setattr__(km, "_public", _public_jwk(km))
    assert km._public is not None
    return dict(km._public)


def _public_jwk(km: KeyMaterial) -> dict[str, str]:
    if isinstance(km.private, rsa.RSAPrivateKey):
        pub = km.private.public_key().public_numbers()
        return {"kty": "RSA", "n": int_to_b64u(pub.n), "e": int_to_b64u(pub.e)}
    if isinstance(km.private, ec.EllipticCurvePrivateKey):
        assert km.crv is not None
        size = coordinate_size(km.crv)
        point = km.private.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": km.crv,
            "x": b64u_encode(point.x.to_bytes(size, "big")),
            "y": b64u_encode(point.y.to_bytes(size, "big")),
        }
    return {"kty": "oct"}


def private_jwk(km: KeyMaterial) -> dict[str, str]:
    """The full JWK including private parts (RSA n,e,d,p,q,dp,dq,qi; EC d; oct k).

    For sealing records only: never return it to a client.
    """
    jwk = public_jwk(km)
    if isinstance(km.private, rsa.RSAPrivateKey):
        nums = km.private.private_numbers()
        parts = {"d": nums.d, "p": nums.p, "q": nums.q}
        parts |= {"dp": nums.dmp1, "dq": nums.dmq1, "qi": nums.iqmp}
        jwk.update({name: int_to_b64u(value) for name, value in parts.items()})
    elif isinstance(km.private, ec.EllipticCurvePrivateKey):
        assert km.crv is not None
        scalar = km.private.private_numbers().private_value
        jwk["d"] = b64u_encode(scalar.to_bytes(coordinate_size(km.crv), "big"))
    else:
        jwk["k"] = b64u_encode(km.private)
    return jwk


def from_jwk(jwk: Mapping[str, object], *, trusted: bool = False) -> KeyMaterial:
    """Import a private JWK (kty RSA/EC/oct, with or without "-HSM") as KeyMaterial.

    Checks what Managed HSM accepts: RSA 2048/3072/4096 with consistent components (p and q are
    recovered when absent), EC P-256/P-256K/P-384/P-521 with x,y matching d, oct of 16/24/32
    bytes. Raises BadParameter for anything malformed or for a JWK without private parts.

    trusted=True skips OpenSSL's RSA consistency check (primality and CRT values: ~0.3 s for a
    4096-bit key). Use it only for JWKs this service produced and sealed itself.
    """
    if not isinstance(jwk, Mapping):
        raise BadParameter("JWK must be a JSON object")
    kty = base_kty(_text(jwk, "kty"))
    if kty == "RSA":
        return KeyMaterial("RSA", _rsa_from_jwk(jwk, check=not trusted))
    if kty == "EC":
        crv = canonical_curve(jwk.get("crv"))
        return KeyMaterial("EC", _ec_from_jwk(jwk, crv), crv)
    key = _bytes(jwk, "k")
    if key is None:
        raise BadParameter("private key material is required")
    if len(key) * 8 not in OCT_SIZES:
        raise BadParameter(f"Invalid oct key size {len(key) * 8}: allowed 128, 192, 256")
    return KeyMaterial("oct", key)


def _rsa_from_jwk(jwk: Mapping[str, object], *, check: bool) -> rsa.RSAPrivateKey:
    n, e, d = _int(jwk, "n"), _int(jwk, "e"), _int(jwk, "d")
    if n is None or e is None:
        raise BadParameter("RSA JWK requires n and e")
    if d is None:
        raise BadParameter("private key material is required")
    if n.bit_length() not in RSA_SIZES:
        raise BadParameter(f"Invalid RSA key size {n.bit_length()}: allowed 2048, 3072, 4096")
    if e < 3 or e % 2 == 0 or e >= n:
        raise BadParameter("Invalid RSA public exponent")
    if not 1 < d < n:
        raise BadParameter("RSA JWK components are inconsistent")
    p, q = _int(jwk, "p"), _int(jwk, "q")
    if p is None or q is None:
        p, q = _recover_prime_factors(n, e, d)
    dp = _int(jwk, "dp")
    dq = _int(jwk, "dq")
    qi = _int(jwk, "qi")
    try:
        # The CRT helpers raise ValueError for a prime <= 1 or a q with no inverse mod p.
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p) if dp is None else dp,
            dmq1=rsa.rsa_crt_dmq1(d, q) if dq is None else dq,
            iqmp=rsa.rsa_crt_iqmp(p, q) if qi is None else qi,
            public_numbers=rsa.RSAPublicNumbers(e, n),
        )
        # Full OpenSSL check: primality, n = p*q, e*d = 1 mod lambda(n) and the CRT values.
        return numbers.private_key(unsafe_skip_rsa_key_validation=not check)
    except ValueError as exc:
        raise BadParameter("RSA JWK components are inconsistent") from exc


def _recover_prime_factors(n: int, e: int, d: int) -> tuple[int, int]:
    """Factor n from (n, e, d) as in NIST SP 800-56B rev. 2, appendix C.

    With k = d*e - 1 = 2**s * t, a random g gives a non-trivial square root of 1 in the chain
    g**t, g**2t, ... with probability at least 1/2, so a valid key costs about two modular
    exponentiations. A chain that never reaches 1 proves d is wrong and stops at once; the
    attempt cap bounds the rest. (`cryptography`'s rsa_recover_prime_factors redoes a full
    exponentiation per step and can take seconds on a 4096-bit key.)

    The 1/2 needs two distinct odd primes in n. For a prime, a prime power or an even n every
    square root of 1 is trivial, and every attempt would run to the cap (a minute of CPU for a
    4096-bit prime "modulus"), so after a first trivial root one test turns those away: g**n = g
    (mod p) for every prime p of such an n, while for n = p*q it almost never holds.
    """
    t, s = d * e - 1, 0
    while t > 0 and t % 2 == 0:
        t, s = t // 2, s + 1
    for attempt in range(_RECOVERY_ATTEMPTS if s else 0):
        g = 2 + secrets.randbelow(n - 3)
        if attempt == 1 and math.gcd(pow(g, n, n) - g, n) != 1:
            break  # a prime power (n itself prime included) or an even n: not a product of two
        x = pow(g, t, n)
        for _ in range(s):
            if x in (1, n - 1):
                break  # trivial root: try another base
            y = x * x % n
            if y == 1:
                p = math.gcd(x - 1, n)
                return max(p, n // p), min(p, n // p)  # p > q, as OpenSSL generates them
            x = y
        else:
            break  # the chain never reached 1, so g**k != 1 (mod n): d does not belong to n, e
    raise BadParameter("RSA JWK components are inconsistent")


def _ec_from_jwk(jwk: Mapping[str, object], crv: str) -> ec.EllipticCurvePrivateKey:
    size = coordinate_size(crv)
    d, x, y = (_bytes(jwk, name) for name in ("d", "x", "y"))
    if d is None:
        raise BadParameter("private key material is required")
    if any(v is not None and len(v) > size for v in (d, x, y)):
        raise BadParameter(f"EC JWK field is too long for curve {crv}")
    if (x is None) != (y is None):
        raise BadParameter("EC JWK requires both x and y, or neither")
    try:
        key = ec.derive_private_key(int.from_bytes(d, "big"), CURVES[crv])
    except ValueError as exc:
        raise BadParameter(f"EC private key is not valid for curve {crv}") from exc
    if x is not None and y is not None:
        point = key.public_key().public_numbers()
        if (point.x, point.y) != (int.from_bytes(x, "big"), int.from_bytes(y, "big")):
            raise BadParameter("EC JWK public point does not match the private key")
    return key


def _curve_name(curve: ec.EllipticCurve) -> str:
    for name, known in CURVES.items():
        if known.name == curve.name:
            return name
    raise BadParameter(f"Unsupported curve {curve.name}")


def _text(jwk: Mapping[str, object], name: str) -> str | None:
    value = jwk.get(name)
    if value is not None and not isinstance(value, str):
        raise BadParameter(f"JWK field {name!r} must be a string")
    return value


def _bytes(jwk: Mapping[str, object], name: str) -> bytes | None:
    value = _text(jwk, name)
    if value is None:
        return None
    try:
        decoded = b64u_decode(value)
    except BadParameter as exc:
        raise BadParameter(f"JWK field {name!r} is not valid base64url") from exc
    if not decoded:
        raise BadParameter(f"JWK field {name!r} is empty")
    return decoded


def _int(jwk: Mapping[str, object], name: str) -> int | None:
    value = _bytes(jwk, name)
    return None if value is None else int.from_bytes(value, "big")


def _shown(value: object) -> str:
    """A user-supplied name, shortened for an error message (names only, never key material)."""
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."
