"""`/backup`, `/prebackup`, `/restore`, `/prerestore`, `/keys/{name}/restore` and their status
URLs: full backup and restore as Azure long-running operations (API §3.2).

Starting answers 202 with `Azure-AsyncOperation: <absolute status URL>` and the status body; the
client then polls that URL (on any partition) until the status is Succeeded or Failed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api import wire
from openmhsm.backup.jobs import IN_PROGRESS, Job
from openmhsm.backup.service import BackupService
from openmhsm.backup.targets import MAX_TOKEN_CHARS
from openmhsm.errors import BadParameter
from openmhsm.types import JSON, Principal

POLL_SECONDS = "1"
MAX_URI = 2048


def _text(body: JSON, name: str, limit: int, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise BadParameter(f"'{name}' must be a non-empty string of at most {limit} characters.")
    return value


def _storage(body: JSON) -> tuple[str, str | None, bool]:
    """storageResourceUri, token, useManagedIdentity. Raises BadParameter."""
    uri = _text(body, "storageResourceUri", MAX_URI)
    token = _text(body, "token", MAX_TOKEN_CHARS, required=False)
    managed = body.get("useManagedIdentity", False)
    if not isinstance(managed, bool):
        raise BadParameter("'useManagedIdentity' must be a boolean.")
    assert uri is not None
    return uri, token, managed


def _sas_parameters(body: JSON) -> tuple[str, str | None, bool]:
    params = body.get("sasTokenParameters")
    if not isinstance(params, dict):
        raise BadParameter("'sasTokenParameters' is required.")
    return _storage(params)


def _principal(request: Request) -> Principal | None:
    state: Any = request.scope.get("state", {})
    found = state.get("principal") if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else None


class BackupRestoreApi:
    def __init__(self, jobs: BackupService) -> None:
        self.jobs = jobs

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/backup", self.backup, methods=["POST"]),
            Route("/prebackup", self.pre_backup, methods=["POST"]),
            Route("/restore", self.restore, methods=["PUT"]),
            Route("/prerestore", self.pre_restore, methods=["PUT"]),
            Route("/keys/{name}/restore", self.restore_key, methods=["PUT"]),
            Route("/backup/{job}/pending", self.backup_status, methods=["GET"]),
            Route("/restore/{job}/pending", self.restore_status, methods=["GET"]),
        ]

    async def backup(self, request: Request) -> Response:
        return await self._backup(request, pre=False)

    async def pre_backup(self, request: Request) -> Response:
        return await self._backup(request, pre=True)

    async def _backup(self, request: Request, *, pre: bool) -> Response:
        uri, token, managed = _storage(await wire.json_body(request))
        rid = wire.client_request_id(request)
        job = await self.jobs.start_backup(uri, token, managed, pre=pre, request_id=rid)
        return _accepted(request, job)

    async def restore(self, request: Request) -> Response:
        return await self._restore(request, pre=False)

    async def pre_restore(self, request: Request) -> Response:
        return await self._restore(request, pre=True)

    async def _restore(self, request: Request, *, pre: bool) -> Response:
        body = await wire.json_body(request)
        uri, token, managed = _sas_parameters(body)
        folder = _text(body, "folderToRestore", MAX_URI)
        assert folder is not None
        job = await self.jobs.start_restore(
            uri,
            token,
            managed,
            folder,
            principal=_principal(request),
            pre=pre,
            request_id=wire.client_request_id(request),
        )
        return _accepted(request, job)

    async def restore_key(self, request: Request) -> Response:
        body = await wire.json_body(request)
        uri, token, managed = _sas_parameters(body)
        folder = _text(body, "folder", MAX_URI)
        assert folder is not None
        job = await self.jobs.start_selective(
            request.path_params["name"], uri, token, managed, folder
        )
        return _accepted(request, job)

    async def backup_status(self, request: Request) -> Response:
        return _status(await self.jobs.status(request.path_params["job"], "backup"))

    async def restore_status(self, request: Request) -> Response:
        return _status(await self.jobs.status(request.path_params["job"], "restore"))


def _accepted(request: Request, job: Job) -> Response:
    headers = {
        "Azure-AsyncOperation": wire.base_url(request) + job.status_path,
        "Retry-After": POLL_SECONDS,
    }
    return JSONResponse(job.wire(), status_code=202, headers=headers)


def _status(job: Job) -> Response:
    headers = {"Retry-After": POLL_SECONDS} if job.status == IN_PROGRESS else None
    return JSONResponse(job.wire(), headers=headers)
