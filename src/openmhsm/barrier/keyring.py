"""The barrier keyring: one 32-byte AES-256 key per term, one term active.

Rotation adds a term and makes it active; records sealed under older terms still open, so a keyring
only grows. Keys never appear in reprs or messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

KEY_SIZE = 32
MAX_TERM = 2**32 - 1  # a term is stored as a u32 in every record header


class Keyring:
    """Immutable map of term -> key with an active term used for sealing."""

    __slots__ = ("_active", "_terms")

    def __init__(self, terms: Mapping[int, bytes], active: int) -> None:
        """Raises ValueError for a term outside 1..2**32-1, a key that is not 32 bytes, or an
        active term that has no key."""
        for term, key in terms.items():
            if not 1 <= term <= MAX_TERM:
                raise ValueError(f"keyring term {term} is outside 1..{MAX_TERM}")
            if len(key) != KEY_SIZE:
                raise ValueError(f"keyring term {term}: key must be {KEY_SIZE} bytes")
        if active not in terms:
            raise ValueError(f"active term {active} has no key")
        self._terms: Mapping[int, bytes] = MappingProxyType(
            {term: bytes(key) for term, key in terms.items()}
        )
        self._active = active

    @property
    def active(self) -> int:
        """The term new records are sealed under."""
        return self._active

    @property
    def terms(self) -> tuple[int, ...]:
        """Every term this keyring can open, ascending."""
        return tuple(sorted(self._terms))

    def key(self, term: int) -> bytes:
        """The key of `term`. Raises KeyError for an unknown term."""
        return self._terms[term]

    def rotate(self, new_key: bytes) -> Keyring:
        """A keyring with `new_key` as a new, active term (one above the highest); self is
        unchanged. Raises ValueError for a wrong key size or when the terms are exhausted."""
        term = max(self._terms) + 1
        return Keyring({**self._terms, term: new_key}, term)

    def __repr__(self) -> str:
        return f"Keyring(terms={list(self.terms)}, active={self._active})"
