"""Frozen settings of a pool and its partitions."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_RETENTION_DAYS = 7
MAX_RETENTION_DAYS = 90


DEFAULT_POOL_NAME = "local"  # what `mhsm up` names a new pool without --name


@dataclass(frozen=True, slots=True)
class DeletionPolicy:
    """Soft-delete retention and purge protection, chosen at pool creation."""

    retention_days: int = MAX_RETENTION_DAYS
    purge_protection: bool = False

    def __post_init__(self) -> None:
        if not MIN_RETENTION_DAYS <= self.retention_days <= MAX_RETENTION_DAYS:
            raise ValueError("retention must be 7 to 90 days")

    @property
    def recovery_level(self) -> str:
        """Key Vault's DeletionRecoveryLevel for this policy (API §5)."""
        base = (
            "Recoverable"
            if self.retention_days == MAX_RETENTION_DAYS
            else ("CustomizedRecoverable")
        )
        return base if self.purge_protection else f"{base}+Purgeable"


LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class RegionConfig:
    """An extended region's link to its primary (DESIGN §8): where writes go, the primary's etcd
    (which the replicator follows) and its partitions' join endpoints (for the domain secrets)."""

    primary_url: str
    primary_etcd: tuple[str, ...]  # "host:port" client endpoints
    primary_join: tuple[tuple[str, int], ...]
    role: str = "extended"
    term: int = 1  # the primary's term when this region began to follow it
    failover_after: float = 30.0  # seconds without the primary before promotion (0: by command)

    def __post_init__(self) -> None:
        if self.role != "extended":
            raise ValueError(f"unknown region role: {self.role!r}")
        if not self.primary_etcd:
            raise ValueError("an extended region needs the primary's etcd endpoints")

    @property
    def primary_storage(self) -> str:
        return "etcd://" + ",".join(self.primary_etcd)

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "primary_url": self.primary_url,
            "primary_etcd": list(self.primary_etcd),
            "primary_join": [[host, port] for host, port in self.primary_join],
            "term": self.term,
            "failover_after": self.failover_after,
        }

    @classmethod
    def from_json(cls, obj: object) -> RegionConfig:
        """Raises ValueError (or KeyError) for a malformed region section."""
        if not isinstance(obj, dict):
            raise ValueError("the region section must be an object")
        return cls(
            role=str(obj.get("role", "extended")),
            primary_url=str(obj["primary_url"]),
            primary_etcd=tuple(str(e) for e in _list(obj.get("primary_etcd"))),
            primary_join=tuple(
                (str(pair[0]), int(pair[1]))
                for pair in _list(obj.get("primary_join"))
                if isinstance(pair, list) and len(pair) == 2
            ),
            term=int(obj.get("term", 1)),
            failover_after=float(obj.get("failover_after", 30.0)),
        )


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A pool's settings, fixed at creation (port and host names may change on restart)."""

    name: str
    tenant_id: str
    port: int
    bind: str = "127.0.0.1"
    hostnames: tuple[str, ...] = ()
    storage: str = ""
    deletion: DeletionPolicy = DeletionPolicy()
    mode: str = "dev"  # "dev": one partition on SQLite; "pool": three partitions on etcd
    # "auto": `mhsm up` downloads the security domain itself to local wrapping keys;
    # "manual": stays NotActivated until an administrator downloads it; "recovery": waits for
    # an upload (a new pool for disaster recovery).
    activation: str = "auto"
    trusted_issuers: tuple[str, ...] = ()  # external OIDC issuers whose tokens are accepted
    trusted_issuer_ca: str = ""  # a CA bundle for reaching them (default: the system's)
    backup_dirs: tuple[str, ...] = ()  # file:// backup targets must lie under one (if any)
    # Secure key release: issuers of attestation tokens (OpenID discovery + JWKS) the pool trusts.
    attestation_issuers: tuple[str, ...] = ()
    clock_offset: float = 0.0  # seconds added to the system clock (tests and time-shift drills)
    region: RegionConfig | None = None  # set in an extended region: read-only, replicated

    @property
    def host(self) -> str:
        """The host clients use: the first --hostname, else 127.0.0.1 (never bare localhost,
        which cannot pass the Azure SDK's challenge-resource check)."""
        return self.hostnames[0] if self.hostnames else "127.0.0.1"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name and address the server certificate lists."""
        return tuple(dict.fromkeys((*LOCAL_NAMES, *self.hostnames)))

    def to_json(self) -> dict[str, object]:
        return {
            "v": 1,
            "name": self.name,
            "tenant_id": self.tenant_id,
            "port": self.port,
            "bind": self.bind,
            "hostnames": list(self.hostnames),
            "storage": self.storage,
            "retention_days": self.deletion.retention_days,
            "purge_protection": self.deletion.purge_protection,
            "mode": self.mode,
            "activation": self.activation,
            "trusted_issuers": list(self.trusted_issuers),
            "trusted_issuer_ca": self.trusted_issuer_ca,
            "backup_dirs": list(self.backup_dirs),
            "attestation_issuers": list(self.attestation_issuers),
            "clock_offset": self.clock_offset,
            **({"region": self.region.to_json()} if self.region is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> PoolConfig:
        hostnames = _list(obj.get("hostnames"))
        return cls(
            name=str(obj["name"]),
            tenant_id=str(obj["tenant_id"]),
            port=int(str(obj["port"])),
            bind=str(obj.get("bind", "127.0.0.1")),
            hostnames=tuple(str(h) for h in hostnames),
            storage=str(obj.get("storage", "")),
            deletion=DeletionPolicy(
                retention_days=int(str(obj.get("retention_days", 90))),
                purge_protection=bool(obj.get("purge_protection", False)),
            ),
            mode=str(obj.get("mode", "dev")),
            activation=str(obj.get("activation", "auto")),
            trusted_issuers=tuple(str(i) for i in _list(obj.get("trusted_issuers"))),
            trusted_issuer_ca=str(obj.get("trusted_issuer_ca", "")),
            backup_dirs=tuple(str(d) for d in _list(obj.get("backup_dirs"))),
            attestation_issuers=tuple(str(i) for i in _list(obj.get("attestation_issuers"))),
            clock_offset=check_clock_offset(float(str(obj.get("clock_offset", 0.0)))),
            region=RegionConfig.from_json(obj["region"]) if obj.get("region") else None,
        )


MAX_CLOCK_OFFSET = 100 * 365 * 86400


def check_clock_offset(seconds: float) -> float:
    """A clock offset: finite and within a hundred years. Raises ValueError."""
    if not math.isfinite(seconds) or abs(seconds) > MAX_CLOCK_OFFSET:
        raise ValueError("the clock offset must be a finite number of seconds within 100 years")
    return seconds


def _list(value: object) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("expected a list in the pool configuration")
    return value
