"""What the HTTP layer needs from one partition: its services and its identity settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from openmhsm.api.metrics import RequestMetrics
from openmhsm.auth.external import TrustedIssuers
from openmhsm.auth.tokens import TokenService
from openmhsm.backup.service import BackupService
from openmhsm.config import DeletionPolicy
from openmhsm.region.forwarder import Sender
from openmhsm.services.audit import AuditLog
from openmhsm.services.backup import KeyBackups
from openmhsm.services.deleted import DeletedKeyService
from openmhsm.services.key_ops import KeyOperations
from openmhsm.services.keys import KeyService
from openmhsm.services.principals import PrincipalStore
from openmhsm.services.rbac import RbacService
from openmhsm.services.release import KeyRelease
from openmhsm.services.security_domain import SecurityDomainService
from openmhsm.services.settings import SettingsStore


@dataclass
class ApiContext:
    keys: KeyService
    deleted: DeletedKeyService
    ops: KeyOperations
    backups: KeyBackups
    principals: PrincipalStore
    tokens: TokenService
    deletion: DeletionPolicy
    tenant_id: str
    audience_ok: Callable[[str], bool]
    partition_id: int = 0
    state: Callable[[], str] = field(default=lambda: "Active")
    metrics: RequestMetrics = field(default_factory=RequestMetrics)
    security_domain: SecurityDomainService | None = None
    rbac: RbacService | None = None  # None: every principal is allowed (unit fixtures)
    settings: SettingsStore | None = None
    audit: AuditLog | None = None  # None: requests are not audited (unit tests)
    external_issuers: TrustedIssuers | None = None
    jobs: BackupService | None = None  # None: no full backup and restore (unit fixtures)
    release: KeyRelease | None = None  # None: release and attestation answer NotSupported
    # In an extended region: the primary's URL, where writes go (DESIGN §8); else None.
    forwards_to: Callable[[], str | None] = field(default=lambda: None)
    forwarder: Sender | None = None  # None: an extended region refuses writes instead
    last_write: Callable[[], int] = field(default=lambda: 0)  # newest replicated revision written

    def __post_init__(self) -> None:
        if self.security_domain is not None:
            self.state = self.security_domain.cached_state

    async def current_state(self) -> str:
        """The pool's activation state, re-read from storage until it is Active."""
        if self.security_domain is None:
            return self.state()
        return await self.security_domain.state()
