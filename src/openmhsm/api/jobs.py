"""`/openmhsm/jobs` path group: the pool's recent full backups and restores, newest first.

**Not part of Azure's API** (Managed HSM answers only one job's status, at its status URL); no
Azure SDK calls it. `mhsm backup list --data-dir DIR` does, so that an operator finds the pool's
backups without knowing where each went.

- GET `/openmhsm/jobs[?kind=backup|restore]` → 200 `{"value": [status]}`: each job's status body
  as its status URL answers it (API §3.2), plus `kind` (backup, prebackup, restore, prerestore,
  selective). Jobs are kept seven days after they end.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.backup.service import BackupService
from openmhsm.errors import BadParameter

PATH = "/openmhsm/jobs"
_GROUPS = ("backup", "restore")


class JobsApi:
    def __init__(self, jobs: BackupService) -> None:
        self.jobs = jobs

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.list, methods=["GET"])]

    async def list(self, request: Request) -> Response:
        group = request.query_params.get("kind")
        if group is not None and group not in _GROUPS:
            raise BadParameter("'kind' must be 'backup' or 'restore'.")
        found = await self.jobs.store.list_jobs()
        chosen = [j for j in found if group is None or j.status_path.split("/")[1] == group]
        chosen.sort(key=lambda job: job.id, reverse=True)  # ids sort by start time
        return JSONResponse({"value": [{**job.wire(), "kind": job.kind} for job in chosen]})
