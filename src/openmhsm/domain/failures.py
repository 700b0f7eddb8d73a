"""The one error the security-domain formats raise (API.md §4): a 400 BadParameter to clients."""

from __future__ import annotations

from openmhsm.errors import BadParameter


class SecurityDomainError(BadParameter):
    """A security-domain file, restore blob, JWE, share or certificate that cannot be used.

    Messages name what is wrong and where, never key material or decrypted bytes.
    """
