"""Public-key operations without the pool: cache a key's public part, then verify and encrypt
locally, as the Managed HSM guidance advises ("perform these operations locally by caching the
public key material": fewer requests, and no transient fault can interrupt them).

1. In the pool: get (or create) an RSA-HSM key and fetch its public JWK once, into `--cache`.
2. In the pool: sign a few messages (PS256): only the private key can.
3. Locally, from the cache file alone (`cryptography`, no client): verify the signatures, and
   encrypt a secret with RSA-OAEP-256.
4. In the pool: decrypt that secret, which proves the local encryption used the pool's key.

    python examples/cached_public_key.py --pool ./pool --key orders-key --cache ./orders-key.json

The cache holds the key id with its version; signatures are made with that version, so a key
rotated in the pool does not invalidate the cache until you refresh it (delete the file).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyOperation, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, SignatureAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from openmhsm.client import Clients, connect

MESSAGES = [b"order 1: 3 widgets", b"order 2: 1 gadget", b"order 3: 12 sprockets"]
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- in the pool --------------------------------------------------------------------------------


def pool_key(clients: Clients, name: str) -> KeyVaultKey:
    try:
        return clients.key_client.get_key(name)
    except ResourceNotFoundError:
        return clients.key_client.create_rsa_key(
            name,
            size=3072,
            hardware_protected=True,
            key_operations=[
                KeyOperation.sign,
                KeyOperation.verify,
                KeyOperation.encrypt,
                KeyOperation.decrypt,
            ],
        )


def cache_public_key(clients: Clients, name: str, cache: Path) -> dict[str, str]:
    """The cached public JWK, fetched from the pool (one GET) if `cache` does not exist yet."""
    if cache.exists():
        cached: dict[str, str] = json.loads(cache.read_text())
        return cached
    key = pool_key(clients, name)
    jwk = vars(key.key)  # the SDK's JsonWebKey keeps the JWK members as plain attributes
    public = {"kid": key.id, "kty": "RSA", "n": b64url(jwk["n"]), "e": b64url(jwk["e"])}
    cache.write_text(json.dumps(public, indent=2) + "\n")  # public: no secret to protect
    return public


def sign_in_pool(signer: CryptographyClient, message: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(message)
    return signer.sign(SignatureAlgorithm.ps256, digest.finalize()).signature


def decrypt_in_pool(clients: Clients, kid: str, ciphertext: bytes) -> bytes:
    with clients.crypto(kid) as decrypter:
        return decrypter.decrypt(EncryptionAlgorithm.rsa_oaep_256, ciphertext).plaintext


# -- locally, from the cache file alone ---------------------------------------------------------


def load_public_key(cache: Path) -> rsa.RSAPublicKey:
    jwk = json.loads(cache.read_text())
    n = int.from_bytes(from_b64url(jwk["n"]), "big")
    e = int.from_bytes(from_b64url(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify_locally(public_key: rsa.RSAPublicKey, message: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, message, PSS, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def encrypt_locally(public_key: rsa.RSAPublicKey, secret: bytes) -> bytes:
    return public_key.encrypt(secret, OAEP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="the pool's data dir (or its pool.json)")
    parser.add_argument("--key", required=True, help="an RSA key's name in the pool")
    parser.add_argument("--cache", required=True, type=Path, help="the public-key cache file")
    args = parser.parse_args(argv)

    with connect(args.pool) as clients:
        kid = cache_public_key(clients, args.key, args.cache)["kid"]
        print(f"public key: {kid} cached in {args.cache}")
        with clients.crypto(kid) as signer:  # the version cached, not whatever is latest
            signatures = [sign_in_pool(signer, m) for m in MESSAGES]
        print(f"signed in the pool: {len(signatures)} messages (PS256)")

    # No client from here on: what a verifier or a producer of encrypted data needs is the file.
    public_key = load_public_key(args.cache)
    valid = all(verify_locally(public_key, m, s) for m, s in zip(MESSAGES, signatures, strict=True))
    print(f"verified locally: {valid}")
    tampered = verify_locally(public_key, MESSAGES[0] + b"0", signatures[0])
    print(f"tampered message verified locally: {tampered}")
    secret = os.urandom(32)
    ciphertext = encrypt_locally(public_key, secret)
    print(f"encrypted locally: {len(ciphertext)} bytes (RSA-OAEP-256)")

    with connect(args.pool) as clients:
        matches = decrypt_in_pool(clients, kid, ciphertext) == secret
    print(f"decrypted in the pool: {'matches' if matches else 'DIFFERS'}")
    return 0 if valid and not tampered and matches else 1


if __name__ == "__main__":
    sys.exit(main())
