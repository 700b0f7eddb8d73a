"""The partition's ASGI application: public routes, then the ordered policy chain and the
data-plane route table."""

from __future__ import annotations

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from openmhsm.api import health, openapi, ping, rng
from openmhsm.api.audit import AuditPolicy
from openmhsm.api.backup_restore import BackupRestoreApi
from openmhsm.api.context import ApiContext
from openmhsm.api.deleted_keys import DeletedKeysApi
from openmhsm.api.jobs import JobsApi
from openmhsm.api.key_backup import KeyBackupApi
from openmhsm.api.key_ops import KeyOpsApi
from openmhsm.api.key_release import KeyReleaseApi
from openmhsm.api.keys import KeysApi
from openmhsm.api.limits import EndOnDisconnect
from openmhsm.api.metrics import MetricsPolicy, metrics_routes
from openmhsm.api.middleware import (
    ActivationGate,
    ApiVersionCheck,
    Authenticate,
    Authorize,
    KeyVaultErrors,
    RequestId,
    RestoreGate,
    not_found,
)
from openmhsm.api.principals import PrincipalsApi
from openmhsm.api.rbac import RbacApi
from openmhsm.api.region_forward import RegionGate
from openmhsm.api.routing import IndexedRouter
from openmhsm.api.security_domain import SecurityDomainApi
from openmhsm.api.settings import SettingsApi
from openmhsm.api.ui import DashboardApi, static_routes
from openmhsm.auth.identity import identity_routes


class _RaisingRouter:
    """A Router that raises (404/405) instead of answering in plain text, so the error policy
    answers in Key Vault's shape."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = IndexedRouter(routes, default=not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.router
        await self.router(scope, receive, send)


def data_plane_routes(ctx: ApiContext) -> list[BaseRoute]:
    """Order matters where paths overlap: literal segments before `{version}`."""
    return [
        # Before the keys routes: `/keys/{name}/providers/...` would otherwise reach them.
        *(RbacApi(ctx.rbac).routes() if ctx.rbac is not None else []),
        *(BackupRestoreApi(ctx.jobs).routes() if ctx.jobs is not None else []),
        *(JobsApi(ctx.jobs).routes() if ctx.jobs is not None else []),
        *ping.routes(ctx.partition_id),
        *KeyBackupApi(ctx).routes(),
        *KeyOpsApi(ctx).routes(),
        *DeletedKeysApi(ctx).routes(),
        *KeyReleaseApi(ctx).routes(),
        *KeysApi(ctx).routes(),
        *rng.routes(),
        *(SecurityDomainApi(ctx).routes() if ctx.security_domain is not None else []),
        *(SettingsApi(ctx.settings).routes() if ctx.settings is not None else []),
        *PrincipalsApi(ctx.principals).routes(),
        *DashboardApi(ctx).routes(),
    ]


def _state(ctx: ApiContext) -> str:
    """The pool's state as `/readyz` reports it: `Restoring` while a full restore runs."""
    if ctx.jobs is not None and ctx.jobs.restoring() is not None:
        return "Restoring"
    return ctx.state()


def build_app(ctx: ApiContext) -> ASGIApp:
    routes = data_plane_routes(ctx)
    protected: ASGIApp = _RaisingRouter(routes)
    protected = Authorize(protected, routes, ctx.rbac)
    # After authentication, as the restore gate; before RBAC, which the primary applies.
    protected = RegionGate(protected, ctx.forwards_to, ctx.forwarder, ctx.last_write)
    if ctx.jobs is not None:  # after authentication: a stranger gets the 401 challenge first
        protected = RestoreGate(protected, ctx.jobs.current_restore)
    protected = Authenticate(
        protected, ctx.tokens, ctx.tenant_id, ctx.audience_ok, ctx.external_issuers
    )
    protected = ActivationGate(protected, ctx.current_state)
    protected = ApiVersionCheck(protected)
    protected = KeyVaultErrors(EndOnDisconnect(protected))
    public = [
        *health.routes(lambda: _state(ctx), ctx.partition_id),
        *identity_routes(ctx.tokens, ctx.principals, ctx.tenant_id, ctx.audience_ok),
        *metrics_routes(ctx.metrics, ctx.partition_id),
        *openapi.routes(),
        *static_routes(),
    ]
    if ctx.metrics.cache_revision is None:  # unless the partition wired another source
        ctx.metrics.cache_revision = lambda: ctx.keys.cache.revision
    app = EndOnDisconnect(IndexedRouter(public, default=protected))
    observed: ASGIApp = MetricsPolicy(app, ctx.metrics, routes)
    if ctx.audit is not None:
        observed = AuditPolicy(observed, ctx.audit, ctx.partition_id, routes)
    return RequestId(observed)
