"""Write the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid inputs, so each
fuzzer starts from what the parser accepts. The files are committed; run this again only when a
format changes (the keys are fresh each time, so every file changes):

    .venv/bin/python fuzz/make_seeds.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import backup_manifest_target
import security_domain_target
import token_target
from atheris import FuzzedDataProvider
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structured_inputs import STRUCTURED, b64u

from openmhsm.backup import format as fmt
from openmhsm.crypto import jwk
from openmhsm.domain import blob

CORPUS = Path(__file__).resolve().parent / "corpus"


def jwk_seeds() -> dict[str, object]:
    rsa_key = jwk.KeyMaterial("RSA", rsa.generate_private_key(65537, 2048))
    full = jwk.private_jwk(rsa_key)
    seeds: dict[str, object] = {
        "rsa-2048.json": full,
        "rsa-hsm-2048-n-e-d.json": {"kty": "RSA-HSM", **{k: full[k] for k in ("n", "e", "d")}},
        "oct-128.json": {"kty": "oct", "k": b64u(bytes(range(16)))},
        "oct-hsm-256.json": {"kty": "oct-HSM", "k": b64u(bytes(range(32))), "key_ops": ["wrapKey"]},
    }
    for crv, curve in jwk.CURVES.items():
        seeds[f"ec-{crv.lower()}.json"] = jwk.private_jwk(
            jwk.KeyMaterial("EC", ec.generate_private_key(curve))
        )
    without_point = dict(seeds["ec-p-384.json"])  # type: ignore[call-overload]
    for name in ("x", "y"):
        without_point.pop(name)
    seeds["ec-hsm-p-384-d-only.json"] = {**without_point, "kty": "EC-HSM"}
    certificate = security_domain_target.WRAPPING[0][1]  # any certificate: the x5c path
    seeds["rsa-x5c-public.json"] = {"kty": "RSA", "x5c": blob.certificate_jwk(certificate)["x5c"]}
    seeds["import-request.json"] = {
        "key": seeds["ec-p-256.json"],
        "Hsm": True,
        "attributes": {"enabled": True, "exp": 2_000_000_000},
        "tags": {"purpose": "fuzz"},
    }
    return seeds


def security_domain_seeds() -> dict[str, object]:
    wrapping = security_domain_target.WRAPPING
    data = {"hsm_backup": bytes(range(32))}
    download = blob.build_download_file(data, [cert for _, cert in wrapping], 2)
    exchange_cert = security_domain_target.EXCHANGE[1]
    return {
        "download-file.json": download,
        "restore-blob.json": blob.build_restore_blob(data, exchange_cert),
        "certificate-jwk.json": json.dumps(blob.certificate_jwk(wrapping[0][1])),
    }


def backup_manifest_seeds() -> dict[str, object]:
    target = backup_manifest_target
    writer = fmt.ChunkWriter(target.KEYS, target.BACKUP_ID)
    records = [("keys/k1/0001", b"sealed value"), ("keys/k1/@current", b"v"), ("rbac/a", b"{}")]
    for key, value in records:
        writer.add(key, value)
    writer.finish()
    manifest = fmt.Manifest(
        target.BACKUP_ID, "p1", target.DOMAIN, 42, 1_700_000_000, {"keys": 2, "rbac": 1},
        tuple(writer.files),
    )  # fmt: skip
    plain = b"".join(
        len(part).to_bytes(4, "big") + part
        for key, value in records
        for part in (key.encode(), value)
    )
    return {"manifest.json": fmt.dump_manifest(target.KEYS, manifest), "records.bin": plain}


def token_seeds() -> dict[str, object]:
    target = token_target
    principal = token_target.Principal("0b3e5c1e", "5a1f7a7e", "app-1", "service")
    token, _ = target.SERVICE.issue(principal=principal, audience=target.AUDIENCE, tenant_id="t1")
    header = {"alg": "ES256", "typ": "JWT", "kid": "ext-p256"}
    key = target.EXTERNAL_KEYS["ext-p256"]
    external, _ = target.signed_token(FuzzedDataProvider(b""), header, target.EXTERNAL_CLAIMS, key)
    return {
        "bearer.txt": f"Bearer {token}",
        "external.txt": external,
        "host.txt": "hsm1.example.com:8443",
    }


def structured_seeds(first_choices: int) -> dict[str, object]:
    """Inputs of choices that change nothing (the bytes run out at once) but the first: one
    valid built document per template or mode, for the fuzzer to start the changes from."""
    return {f"built-{i}.bin": STRUCTURED + bytes([i]) for i in range(first_choices)}


def write(target: str, seeds: dict[str, object]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for name, seed in seeds.items():
        if isinstance(seed, dict):
            seed = json.dumps(seed, indent=1)
        (folder / name).write_bytes(seed if isinstance(seed, bytes) else str(seed).encode())


def main() -> None:
    documents = jwk_seeds()  # every one a template of the structured inputs too
    write("jwk", documents | structured_seeds(len(documents)))
    write("security_domain", security_domain_seeds() | structured_seeds(3))
    write("backup_manifest", backup_manifest_seeds() | structured_seeds(2))
    write("token", token_seeds() | structured_seeds(2))
    for folder in sorted(CORPUS.iterdir()):
        size = sum(path.stat().st_size for path in folder.iterdir())
        print(f"{folder.name}: {len(list(folder.iterdir()))} seeds, {size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
