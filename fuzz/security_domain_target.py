"""Fuzz target: the security-domain formats of domain/ (blob.py, jwe.py, shamir.py through them):
an uploaded restore blob, a downloaded security-domain file read back with wrapping keys, the
certificate JWKs of a download request or a transfer key, and the domain secrets an upload installs
(secrets.py).

Contract: `read_download_file`, `read_restore_blob`, `certificate_from_jwk`, `decrypt_dir` and
`decrypt_with_rsa` raise only SecurityDomainError, `DomainSecrets.from_bytes` only ValueError; a
document that is valid as built gives back exactly the data it was built from. The keys are the
test vectors' (tests/vectors/security-domain).

    .venv/bin/python fuzz/security_domain_target.py -max_total_time=600 /tmp/sd-corpus \
        fuzz/corpus/security_domain
"""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

with atheris.instrument_imports(include=["openmhsm"]):
    from openmhsm.domain import blob, jwe, shamir
    from openmhsm.domain.failures import SecurityDomainError
    from openmhsm.domain.secrets import DomainSecrets

from structured_inputs import (
    b64u,
    choices,
    der_changed,
    loaded,
    perturbed,
    perturbed_bytes,
    to_json,
)

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "security-domain"
NAMES = ("EncData", "SharedKeys", "WrappedKey", "data", "kdf", "tag", "compact_jwe", "enc_shares")
NAMES += ("enc_key", "x5t_256", "key_algorithm", "required", "version", "alg", "enc", "kid")
NAMES += ("kty", "n", "e", "x5c", "x5t", "x5t#S256", "zip", "crit")
_OAEP_SHA1 = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)  # noqa: S303
_CEK_PADDINGS: dict[str, padding.AsymmetricPadding] = {
    "RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
    "RSA-OAEP": _OAEP_SHA1,
    "RSA1_5": padding.PKCS1v15(),
}


def _pair(name: str, suffix: str) -> blob.KeyPair:
    key = load_pem_private_key((VECTORS / f"{name}.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate((VECTORS / f"{name}.{suffix}").read_bytes())


WRAPPING = [_pair(name, "cer") for name in ("w0", "w1", "w2")]
EXCHANGE = _pair("exchange", "pem")
SECRETS = DomainSecrets("6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b", bytes(range(32)))


class Built:
    """A document under construction, and whether every part of it is still valid."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.intact = True

    def kept(self, value: object) -> object:
        """`value` perturbed; the document stays intact only if nothing changed."""
        changed = perturbed(value, self.fdp, NAMES)
        self.intact &= to_json(changed) == to_json(value)
        return changed

    def kept_bytes(self, data: bytes) -> bytes:
        changed = perturbed_bytes(data, self.fdp)
        self.intact &= changed == data
        return changed

    def data_items(self, master: bytes) -> tuple[dict[str, object], dict[str, bytes]]:
        """EncData for 1 to 3 data items under `master`, and the plaintext by tag."""
        items, plain = [], {}
        for tag in blob.TAGS[: self.fdp.ConsumeIntInRange(1, len(blob.TAGS))]:
            if tag == "hsm_backup":  # what an upload installs: OpenMHSM's domain secrets
                plain[tag] = perturbed_bytes(SECRETS.to_bytes(), self.fdp)
            else:
                plain[tag] = self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 64))
            token = self.dir_jwe(plain[tag], blob.data_key(master, tag), tag)
            items.append({"compact_jwe": token, "tag": tag})
        return {"data": items, "kdf": blob.KDF_NAME}, plain

    def dir_jwe(self, plaintext: bytes, cek: bytes, kid: str) -> str:
        if self.fdp.ConsumeIntInRange(0, 3) != 3:
            return jwe.encrypt_dir(plaintext, cek, kid=kid)
        return self.crafted_jwe({"alg": "dir", "enc": jwe.ENC, "kid": kid}, b"", cek)

    def rsa_jwe(self, plaintext: bytes, public_key: rsa.RSAPublicKey) -> str:
        if self.fdp.ConsumeIntInRange(0, 3) != 3:
            return jwe.encrypt_to_rsa(plaintext, public_key)
        alg = self.fdp.PickValueInList(list(_CEK_PADDINGS))
        cek = self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 100))
        encrypted_key = public_key.encrypt(cek, _CEK_PADDINGS[alg])
        return self.crafted_jwe({"alg": alg, "enc": jwe.ENC, "kid": "k"}, encrypted_key, cek)

    def crafted_jwe(self, header: dict[str, str], encrypted_key: bytes, cek: bytes) -> str:
        """A JWE with an input-chosen header, IV and ciphertext, authenticated when the CEK
        allows, so that the checks after the tag (padding above all) are reached."""
        self.intact = False
        fdp = self.fdp
        encoded_header = b64u(to_json(perturbed(header, fdp, NAMES)).encode())
        iv = fdp.ConsumeBytes(fdp.PickValueInList([16, 16, 16, 0, 15, 17]))
        ciphertext = fdp.ConsumeBytes(
            16 * fdp.ConsumeIntInRange(0, 4) + fdp.PickValueInList([0, 1])
        )
        if len(cek) == jwe.CEK_SIZE:
            tag = jwe._tag(cek, encoded_header, iv, ciphertext)  # the module's own MAC layout
        else:
            tag = fdp.ConsumeBytes(32)
        parts = (encoded_header, *map(b64u, (encrypted_key, iv, ciphertext, tag)))
        return ".".join(parts)


def download_file(built: Built) -> tuple[str, dict[str, bytes]]:
    """A security-domain file: 2 of 3 shares to the three wrapping certificates."""
    fdp = built.fdp
    master = built.kept_bytes(fdp.ConsumeBytes(blob.MASTER_KEY_SIZE).ljust(32, b"\x01"))
    shares = shamir.split(master or b"\x00", len(WRAPPING), 2)
    enc_shares = []
    for share, (key, cert) in zip(shares, WRAPPING, strict=True):
        enc_key = built.rsa_jwe(built.kept_bytes(share), key.public_key())
        enc_shares.append({"enc_key": enc_key, "x5t_256": blob.thumbprint_s256(cert)})
    enc_data, plain = built.data_items(master)
    document = {
        "EncData": enc_data,
        "SharedKeys": {"enc_shares": enc_shares, "key_algorithm": "shamir_share", "required": 2},
        "version": blob.FORMAT_VERSION,
    }
    return to_json(built.kept(document)), plain


def restore_blob(built: Built) -> tuple[str, dict[str, bytes]]:
    """A restore blob wrapped to the exchange certificate."""
    fdp = built.fdp
    master = built.kept_bytes(fdp.ConsumeBytes(blob.MASTER_KEY_SIZE).ljust(32, b"\x02"))
    enc_data, plain = built.data_items(master)
    document = {
        "EncData": enc_data,
        "WrappedKey": {
            "enc_key": built.rsa_jwe(master, EXCHANGE[0].public_key()),
            "x5t_256": blob.thumbprint_s256(EXCHANGE[1]),
        },
    }
    return to_json(built.kept(document)), plain


def certificate_jwk(fdp: atheris.FuzzedDataProvider) -> object:
    """A download request's certificate JWK, its fields or its DER changed."""
    certificate = fdp.PickValueInList([cert for _, cert in (*WRAPPING, EXCHANGE)])
    template = blob.certificate_jwk(certificate)
    if fdp.ConsumeBool():
        der = der_changed(certificate.public_bytes(Encoding.DER), fdp)
        template["x5c"] = [base64.b64encode(der).decode("ascii")]
    return loaded(to_json(perturbed(template, fdp, NAMES)).encode())


def expect_domain_error(parse: Callable[[], object]) -> object:
    try:
        return parse()
    except SecurityDomainError:
        return None


def check_document(data: bytes) -> None:
    """The bytes as they come: a security-domain file, a restore blob, a JWE, a certificate JWK."""
    text = data.decode("utf-8", "replace")
    expect_domain_error(lambda: blob.read_download_file(text, WRAPPING))
    expect_domain_error(lambda: blob.read_restore_blob(text, *EXCHANGE))
    expect_domain_error(lambda: jwe.decrypt_dir(text, bytes(jwe.CEK_SIZE)))
    expect_domain_error(lambda: jwe.decrypt_with_rsa(text, EXCHANGE[0]))
    value = loaded(data)
    if isinstance(value, dict):
        expect_domain_error(lambda: blob.certificate_from_jwk(value))


def check_built(fdp: atheris.FuzzedDataProvider) -> None:
    """A valid file, blob or certificate JWK, changed as the input chooses."""
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 2:
        jwk = certificate_jwk(fdp)
        if isinstance(jwk, dict):
            expect_domain_error(lambda: blob.certificate_from_jwk(jwk))
        return
    built = Built(fdp)
    if mode == 0:
        document, plain = download_file(built)
        result = expect_domain_error(lambda: blob.read_download_file(document, WRAPPING))
    else:
        document, plain = restore_blob(built)
        result = expect_domain_error(lambda: blob.read_restore_blob(document, *EXCHANGE))
    if built.intact:
        assert result == plain, "a valid document did not give back its data"
    if isinstance(result, dict):  # as an upload goes on (services/security_domain.py)
        with contextlib.suppress(ValueError):
            DomainSecrets.from_bytes(result.get("hsm_backup", b""))


def TestOneInput(data: bytes) -> None:
    fdp = choices(data)
    if fdp is None:
        check_document(data)
    else:
        check_built(fdp)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
