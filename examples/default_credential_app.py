"""An unmodified Azure application: the same code runs against Managed HSM in Azure and against
an OpenMHSM pool, with nothing pool-specific but the vault URL it reads from MHSM_URL.

It authenticates with `DefaultAzureCredential()`, gets (or creates) an EC P-256 signing key with
`KeyClient`, signs a message in the pool and verifies the signature. Everything else comes from
the environment that `mhsm env` prints: the pool CA (REQUESTS_CA_BUNDLE), a managed-identity
endpoint (IDENTITY_ENDPOINT, IDENTITY_HEADER) and a service principal (AZURE_*), either of
which DefaultAzureCredential picks up.

    mhsm up --dev --data-dir ./pool --detach
    eval "$(mhsm env --data-dir ./pool)"
    python examples/default_credential_app.py [KEY_NAME]     # default name: app-signing-key
    mhsm down --data-dir ./pool

Against Azure, set MHSM_URL to https://<your-hsm>.managedhsm.azure.net and sign in as usual.
"""

from __future__ import annotations

import hashlib
import os
import sys

from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

MESSAGE = b"hello from an unmodified app"


def signing_key(client: KeyClient, name: str) -> KeyVaultKey:
    """The key `name`, created (EC-HSM, P-256) if the HSM does not have it yet."""
    try:
        return client.get_key(name)
    except ResourceNotFoundError:
        return client.create_ec_key(name, curve="P-256", hardware_protected=True)


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else "app-signing-key"
    credential = DefaultAzureCredential()
    with credential, KeyClient(vault_url=os.environ["MHSM_URL"], credential=credential) as keys:
        key = signing_key(keys, name)
        with CryptographyClient(key, credential=credential) as crypto:
            digest = hashlib.sha256(MESSAGE).digest()
            signed = crypto.sign(SignatureAlgorithm.es256, digest)  # in the HSM: a private key
            # With the key's public part in hand, the SDK verifies locally.
            verified = crypto.verify(SignatureAlgorithm.es256, digest, signed.signature)
    print(f"key: {key.id}")
    print(f"signature: {len(signed.signature)} bytes, valid: {verified.is_valid}")
    return 0 if verified.is_valid else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
