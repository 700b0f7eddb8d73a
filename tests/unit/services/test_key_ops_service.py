"""KeyOperations: the checks Key Vault makes before any crypto (enabled, nbf, exp, key_ops),
and round trips through the service for each key type."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest

from openmhsm.errors import BadParameter, CryptoError, Forbidden, KeyNotFound

Runner = Callable[..., Any]
NOW = 1_700_000_000
DIGEST = hashlib.sha256(b"message").digest()


def test_ec_sign_and_verify(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("ec", {"kty": "EC-HSM"})
        kv, sig = await s.ops.sign("ec", None, "ES256", DIGEST)
        assert len(sig) == 64  # raw r||s
        assert (await s.ops.verify("ec", kv.version, "ES256", DIGEST, sig))[1] is True
        bad = bytes([sig[0] ^ 1]) + sig[1:]
        assert (await s.ops.verify("ec", None, "ES256", DIGEST, bad))[1] is False
        with pytest.raises(BadParameter):
            await s.ops.sign("ec", None, "ES256", DIGEST[:16])  # wrong digest length
        with pytest.raises(BadParameter):
            await s.ops.sign("ec", None, "ES384", DIGEST)  # wrong curve for the algorithm

    hsm(body)


def test_oct_gcm_encrypt_decrypt(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("aes", {"kty": "oct-HSM"})
        kv, result = await s.ops.encrypt("aes", None, "A256GCM", b"hello", None, b"aad")
        assert result.iv is not None and len(result.iv) == 12
        assert result.tag is not None and len(result.tag) == 16
        _, plain = await s.ops.decrypt(
            "aes", kv.version, "A256GCM", result.ciphertext, result.iv, b"aad", result.tag
        )
        assert plain == b"hello"
        with pytest.raises(CryptoError):
            await s.ops.decrypt(
                "aes", None, "A256GCM", result.ciphertext, result.iv, b"other", result.tag
            )

    hsm(body)


def test_oct_wrap_unwrap(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("kek", {"kty": "oct-HSM"})
        dek = os.urandom(32)
        _, wrapped = await s.ops.wrap("kek", None, "A256KW", dek)
        assert len(wrapped) == 40
        assert (await s.ops.unwrap("kek", None, "A256KW", wrapped))[1] == dek
        with pytest.raises(BadParameter):
            await s.ops.wrap("kek", None, "A128KW", dek)  # key size does not match
        with pytest.raises(BadParameter):
            await s.ops.wrap("kek", None, "ES256", dek)  # not an oct algorithm

    hsm(body)


def test_rsa_operations(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("rsa", {"kty": "RSA-HSM"})
        _, result = await s.ops.encrypt("rsa", None, "RSA-OAEP-256", b"secret", None, None)
        assert len(result.ciphertext) == 256 and result.iv is None and result.tag is None
        _, plain = await s.ops.decrypt(
            "rsa", None, "RSA-OAEP-256", result.ciphertext, None, None, None
        )
        assert plain == b"secret"
        _, sig = await s.ops.sign("rsa", None, "PS256", DIGEST)
        assert (await s.ops.verify("rsa", None, "PS256", DIGEST, sig))[1] is True
        _, wrapped = await s.ops.wrap("rsa", None, "RSA-OAEP", b"k" * 32)
        assert (await s.ops.unwrap("rsa", None, "RSA-OAEP", wrapped))[1] == b"k" * 32

    hsm(body)


def test_disabled_key_refuses_every_operation(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("aes", {"kty": "oct", "attributes": {"enabled": False}})
        with pytest.raises(Forbidden, match="disabled"):
            await s.ops.encrypt("aes", None, "A256GCM", b"x", None, None)
        with pytest.raises(Forbidden):
            await s.ops.wrap("aes", None, "A256KW", bytes(16))
        await s.keys.update("aes", None, {"attributes": {"enabled": True}})
        await s.ops.encrypt("aes", None, "A256GCM", b"x", None, None)

    hsm(body)


def test_nbf_and_exp_follow_the_clock(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        attrs = {"nbf": NOW + 100, "exp": NOW + 200}
        await s.keys.create("ec", {"kty": "EC", "attributes": attrs})
        with pytest.raises(Forbidden, match="nbf"):
            await s.ops.sign("ec", None, "ES256", DIGEST)
        s.clock.advance(100)  # now == nbf: valid
        _, sig = await s.ops.sign("ec", None, "ES256", DIGEST)
        s.clock.advance(99.5)  # just before exp
        assert (await s.ops.verify("ec", None, "ES256", DIGEST, sig))[1]
        s.clock.advance(0.5)  # now == exp: expired
        with pytest.raises(Forbidden, match="expired"):
            await s.ops.sign("ec", None, "ES256", DIGEST)
        with pytest.raises(Forbidden, match="expired"):
            await s.ops.verify("ec", None, "ES256", DIGEST, sig)

    hsm(body)


def test_key_ops_limit_operations(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("ec", {"kty": "EC", "key_ops": ["verify"]})
        with pytest.raises(Forbidden, match="key_ops"):
            await s.ops.sign("ec", None, "ES256", DIGEST)
        await s.keys.create("aes", {"kty": "oct", "key_ops": ["encrypt"]})
        _, result = await s.ops.encrypt("aes", None, "A256GCM", b"x", None, None)
        with pytest.raises(Forbidden):
            await s.ops.decrypt(
                "aes", None, "A256GCM", result.ciphertext, result.iv, None, result.tag
            )
        with pytest.raises(Forbidden):
            await s.ops.unwrap("aes", None, "A256KW", bytes(40))
        await s.keys.update("aes", None, {"key_ops": ["encrypt", "decrypt"]})
        _, plain = await s.ops.decrypt(
            "aes", None, "A256GCM", result.ciphertext, result.iv, None, result.tag
        )
        assert plain == b"x"

    hsm(body)


def test_operations_on_a_named_version(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        old = await s.keys.create("aes", {"kty": "oct"})
        _, wrapped = await s.ops.wrap("aes", None, "A256KW", bytes(32))
        new = await s.keys.create("aes", {"kty": "oct"})
        with pytest.raises(CryptoError):
            await s.ops.unwrap("aes", None, "A256KW", wrapped)  # current is the new version
        kv, dek = await s.ops.unwrap("aes", old.version, "A256KW", wrapped)
        assert (kv.version, dek) == (old.version, bytes(32))
        await s.keys.update("aes", old.version, {"attributes": {"enabled": False}})
        with pytest.raises(Forbidden):
            await s.ops.unwrap("aes", old.version, "A256KW", wrapped)
        assert (await s.ops.wrap("aes", None, "A256KW", bytes(32)))[0].version == new.version

    hsm(body)


def test_missing_key_or_version(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(KeyNotFound):
            await s.ops.sign("nope", None, "ES256", DIGEST)
        await s.keys.create("ec", {"kty": "EC"})
        with pytest.raises(KeyNotFound):
            await s.ops.sign("ec", "f" * 32, "ES256", DIGEST)

    hsm(body)


@pytest.mark.parametrize("offload", [True, False])
def test_rsa_private_operations_on_a_thread_or_inline(hsm: Runner, offload: bool) -> None:
    async def body(s: Any) -> None:
        s.ops.offload_rsa = offload
        await s.keys.create("rsa", {"kty": "RSA-HSM", "key_size": 2048})
        kv, sig = await s.ops.sign("rsa", None, "PS256", DIGEST)
        assert (await s.ops.verify("rsa", kv.version, "PS256", DIGEST, sig))[1] is True
        _, wrapped = await s.ops.wrap("rsa", None, "RSA-OAEP-256", b"k" * 32)
        assert (await s.ops.unwrap("rsa", None, "RSA-OAEP-256", wrapped))[1] == b"k" * 32

    hsm(body)
