"""Full backup and restore jobs seen from the client: where they go (the target options shared by
`mhsm backup` and `mhsm restore`), starting them, and following them to the end (API §3.2).

Jobs are driven over raw REST through the KeyClient's pipeline (TLS, challenge and token are the
Azure SDK's), because the SDK's poller hides the status body and its `progress` counts, which the
progress bar needs. Requests carry exactly the bodies KeyVaultBackupClient sends. A SAS token is
sent to the pool and nowhere else: no message, repr or summary here quotes it.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.rest import HttpRequest, HttpResponse

from openmhsm.backup import targets
from openmhsm.cli import progress
from openmhsm.client import Clients

SUCCEEDED = "succeeded"
ENDED = frozenset({"succeeded", "failed", "canceled"})
FIRST_POLL, MAX_POLL = 0.25, 5.0  # seconds; Retry-After, when sent, caps the back-off
_ERRORS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


class JobFailed(Exception):
    """The job ended Failed or Canceled; the message is one line with its error code."""


@dataclass(frozen=True)
class Storage:
    """A blob container (or `file://` directory) and how the pool authenticates to it."""

    uri: str
    token: str | None = field(default=None, repr=False)
    managed: bool = False

    def wire(self) -> dict[str, Any]:
        """`storageResourceUri`, `token` and `useManagedIdentity`, as the SDK sends them."""
        body: dict[str, Any] = {"storageResourceUri": self.uri, "useManagedIdentity": self.managed}
        if self.token is not None:
            body["token"] = self.token
        return body

    def open(self) -> targets.BackupTarget:
        """The container opened from this process (for listing and pruning). Raises
        openmhsm.errors.BadParameter."""
        return targets.open_target(self.uri, token=self.token, use_managed_identity=self.managed)


# The name of a variable, not a secret.
SAS_TOKEN_VARIABLE = "MHSM_SAS_TOKEN"  # noqa: S105  # nosec B105


def add_auth_options(parser: argparse.ArgumentParser) -> None:
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--sas-token",
        "--storage-container-SAS-token",  # az's name
        "-t",
        dest="sas_token",
        metavar="TOKEN",
        help=f"a SAS token for the blob container (never printed; default: ${SAS_TOKEN_VARIABLE},"
        " which keeps it out of the process list)",
    )
    auth.add_argument(
        "--use-managed-identity",
        action="store_true",
        help="authenticate to the container as the managed identity (of the pool, or of this "
        "process when listing or pruning)",
    )


def add_target_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument(
        "--storage-container-uri",
        "--storage-resource-uri",  # az's name
        "-u",
        dest="storage_container_uri",
        metavar="URL",
        help="an Azure Blob container URL, or file:///<absolute path> of a directory",
    )
    where.add_argument(
        "--dir",
        metavar="PATH",
        help="a directory as the container (file://<absolute PATH>), written by the pool",
    )
    add_auth_options(parser)


def storage_of(args: argparse.Namespace) -> Storage:
    """The container named by the target options. Raises ValueError for a bad combination."""
    if args.dir is not None:
        if args.sas_token is not None or args.use_managed_identity:
            raise ValueError("--dir takes no --sas-token or --use-managed-identity")
        return Storage(Path(args.dir).expanduser().absolute().as_uri())
    return checked_storage(args.storage_container_uri, "--storage-container-uri", args)


def checked_storage(uri: str, flag: str, args: argparse.Namespace) -> Storage:
    """`uri` with the auth options, checked as far as can be without I/O. Raises ValueError;
    messages never quote the URL, which may hold a SAS token by mistake."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ValueError(f"{flag} is not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http", "file"):
        raise ValueError(f"{flag} must be an https:// blob container URL or a file:// path")
    if parts.query or parts.fragment:
        raise ValueError(f"{flag} must not carry a query: give the SAS token with --sas-token")
    token, managed = args.sas_token, bool(args.use_managed_identity)
    if token is None and not managed and scheme != "file":
        token = os.environ.get(SAS_TOKEN_VARIABLE) or None  # off the command line and /proc
    if token is not None and not token.removeprefix("?"):
        raise ValueError("--sas-token is empty")
    if scheme == "file":
        if token is not None or managed:
            raise ValueError("a file:// URL takes no --sas-token or --use-managed-identity")
        return Storage(uri)
    if token is None and not managed:
        raise ValueError("a blob container URL needs --sas-token or --use-managed-identity")
    return Storage(uri, token.removeprefix("?") if token is not None else None, managed)


def split_folder_url(folder_url: str) -> tuple[str, str]:
    """(container URL, folder) cut after the first path segment, as the SDK cuts it (the pool
    joins and re-cuts them, DESIGN §7). Raises ValueError."""
    parts = urlsplit(folder_url)
    container, _, folder = parts.path.strip("/").partition("/")
    if not container or not folder:
        raise ValueError("--backup-folder must name a backup folder inside a container")
    return f"{parts.scheme}://{parts.netloc}/{container}", folder


@dataclass(frozen=True)
class Started:
    """A job the pool accepted: its status URL and first status body."""

    status_url: str
    body: dict[str, Any]
    retry_after: float = MAX_POLL

    @property
    def job_id(self) -> str:
        return str(self.body.get("jobId") or "")


def pool_backups(clients: Clients) -> list[dict[str, Any]]:
    """The pool's recent backup jobs, newest first (GET /openmhsm/jobs?kind=backup)."""
    body = _send(clients, "GET", "/openmhsm/jobs?kind=backup").json()
    rows = []
    for job in body.get("value", []) if isinstance(body, dict) else []:
        if job.get("kind") != "backup":
            continue
        started = job.get("startTime")
        rows.append(
            {
                "folderUrl": job.get("azureStorageBlobContainerUri"),
                "status": job.get("status"),
                "started": datetime.fromtimestamp(started, UTC).isoformat()
                if isinstance(started, int)
                else None,
                "records": progress_of(job)[0],
                "jobId": job.get("jobId"),
            }
        )
    return rows


def start_backup(clients: Clients, storage: Storage) -> Started:
    """POST /backup. Raises HttpResponseError (ResourceExistsError while another full backup or
    restore runs), ValueError for a malformed answer."""
    return _start(clients, "POST", "/backup", storage.wire())


def start_restore(
    clients: Clients, folder_url: str, storage: Storage, key: str | None = None
) -> Started:
    """PUT /restore, or PUT /keys/{key}/restore for one key. `storage.uri` is ignored: the
    container comes from `folder_url`. Raises like start_backup."""
    container, folder = split_folder_url(folder_url)
    sas = Storage(container, storage.token, storage.managed).wire()
    if key is None:
        return _start(
            clients, "PUT", "/restore", {"sasTokenParameters": sas, "folderToRestore": folder}
        )
    path = f"/keys/{quote(key, safe='')}/restore"
    return _start(clients, "PUT", path, {"sasTokenParameters": sas, "folder": folder})


def _send(clients: Clients, method: str, url: str, body: Any = None) -> HttpResponse:
    request = HttpRequest(method, url, json=body, headers={"Accept": "application/json"})
    response = clients.key_client.send_request(request)
    if not 200 <= response.status_code < 300:
        map_error(response.status_code, response, _ERRORS)
        raise HttpResponseError(response=response)
    return response


def _start(clients: Clients, method: str, path: str, body: dict[str, Any]) -> Started:
    response = _send(clients, method, path, body)
    status_url = response.headers.get("Azure-AsyncOperation", "")
    pool, status = urlsplit(clients.url), urlsplit(status_url)
    # The status URL gets the bearer token: never follow one to another host.
    if (status.scheme, status.netloc.lower()) != (pool.scheme, pool.netloc.lower()):
        raise ValueError("the pool answered without a status URL of its own")
    return Started(status_url, _status_body(response), _retry_after(response))


def _status_body(response: HttpResponse) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ValueError("the pool sent a malformed job status")
    return body


def wait(clients: Clients, started: Started, bar: ProgressBar) -> dict[str, Any]:
    """Poll the job until it ends; return its final status body. Raises JobFailed if it failed,
    HttpResponseError and ValueError like start_backup."""
    body, delay, retry_after = started.body, FIRST_POLL, started.retry_after
    bar.started(started.job_id)
    try:
        while body["status"].lower() not in ENDED:
            bar.update(body)
            # Our own pool: poll sooner than its Retry-After at first, so small jobs end quickly.
            time.sleep(min(delay, retry_after))
            delay = min(delay * 2, MAX_POLL)
            response = _send(clients, "GET", started.status_url)
            body, retry_after = _status_body(response), _retry_after(response)
    except KeyboardInterrupt:
        bar.interrupted(started.job_id)
        raise
    bar.finish(body)
    if body["status"].lower() != SUCCEEDED:
        raise JobFailed(f"{bar.label} {body['status']}: {describe_error(body)}")
    return body


def _retry_after(response: HttpResponse) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", MAX_POLL)), 0.0), MAX_POLL)
    except ValueError:
        return MAX_POLL


def describe_error(body: dict[str, Any]) -> str:
    """`(code) message` of a failed job's status body, else its statusDetails."""
    error = body.get("error")
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        return f"({error.get('code') or 'Error'}) {error.get('message') or ''}".strip()
    return str(body.get("statusDetails") or "no error was reported")


def backup_summary(body: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What a finished backup prints: its folder, records backed up and seconds taken."""
    return {
        "status": body["status"],
        "jobId": body.get("jobId"),
        "folderUrl": body.get("azureStorageBlobContainerUri"),
        "records": progress_of(body)[0],
        "seconds": seconds,
    }


def progress_of(body: dict[str, Any]) -> tuple[int, int | None]:
    """(done, total) records of a status body (total None while unknown)."""
    progress = body.get("progress")
    if not isinstance(progress, dict):
        return 0, None
    done, total = progress.get("done"), progress.get("total")
    return (
        done if isinstance(done, int) else 0,
        total if isinstance(total, int) else None,
    )


class ProgressBar:
    """A job's progress on stderr: on a terminal (or with --progress), one line redrawn in place;
    elsewhere (logs), a line when the job starts and one at most every LOG_EVERY seconds while it
    runs; nothing at all with --no-progress or --only-show-errors (`progress.progress_mode`)."""

    WIDTH = 30
    LOG_EVERY = 10.0

    def __init__(
        self, label: str, stream: TextIO, *, unit: str = "records", mode: str = progress.AUTO
    ) -> None:
        self.label = self.base_label = label
        self.phase = ""
        self.unit = unit
        self._stream = stream
        self._tty = progress.draws(mode, stream)
        self._quiet = mode == progress.OFF
        self._t0 = time.monotonic()
        self._logged = self._t0

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._t0, 1)

    def started(self, job_id: str) -> None:
        if not self._tty:
            self._write(f"{self.label}: job {job_id} started\n")

    def update(self, body: dict[str, Any]) -> None:
        done, total = progress_of(body)
        progress = body.get("progress")
        phase = progress.get("phase") if isinstance(progress, dict) else None
        if isinstance(phase, str) and phase not in ("backup", self.phase):
            self.phase = phase  # a restore stages every record, then applies them
            self.label = f"{self.base_label} ({phase})"
        if self._tty:
            self._write(f"\r{self.line(done, total)}\x1b[K")
        elif time.monotonic() - self._logged >= self.LOG_EVERY:
            self._logged = time.monotonic()
            self._write(f"{self.label}: {self.count(done, total)}\n")

    def finish(self, body: dict[str, Any]) -> None:
        if self._tty:
            self.update(body)
            self._write("\n")

    def interrupted(self, job_id: str) -> None:
        end = "\n" if self._tty else ""
        self._write(f"{end}{self.label}: stopped waiting; job {job_id} goes on in the pool\n")

    def line(self, done: int, total: int | None) -> str:
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
        else:
            bar = "." * self.WIDTH
        return f"{self.label} [{bar}] {self.count(done, total)} {self.seconds:.1f} s"

    def count(self, done: int, total: int | None) -> str:
        return f"{done}/{total if total is not None else '?'} {self.unit}"

    def _write(self, text: str) -> None:
        if self._quiet:
            return
        self._stream.write(text)
        self._stream.flush()
