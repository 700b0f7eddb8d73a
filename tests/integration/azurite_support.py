"""Azurite, Azure Storage's blob emulator, for the backup tests: one process per fixture, on a free
port, path-style (`http://127.0.0.1:<port>/devstoreaccount1/<container>`).

`make install` puts Azurite in `.tools/`; without it these tests fail (they never skip). A test
module gets the fixtures `azurite` and `azurite_https` by importing their functions:
`from azurite_support import azurite_server  # noqa: F401 - the "azurite" fixture`.
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate

ACCOUNT = "devstoreaccount1"
# The emulator's well-known account key (published in Azurite's and Azure's docs; not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
ALL_PERMISSIONS = ContainerSasPermissions(
    read=True, write=True, delete=True, list=True, create=True, add=True
)
START_TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"successfully listens on (https?)://127\.0\.0\.1:(\d+)")


@dataclass
class Azurite:
    """One azurite-blob process; `ca_path` is the CA that signed its certificate (HTTPS only)."""

    proc: subprocess.Popen[bytes]
    scheme: str
    port: int
    log_path: Path
    ca_path: Path | None = None

    @property
    def account_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    def container_url(self, container: str) -> str:
        return f"{self.account_url}/{container}"

    def service_client(self) -> BlobServiceClient:
        """A client with the account key (the test's own access, not the server's)."""
        credential = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        verify: str | bool = str(self.ca_path) if self.ca_path else True
        return BlobServiceClient(self.account_url, credential, connection_verify=verify)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def find_azurite() -> str:
    """The azurite-blob executable: the repo's `.tools/`, else PATH; fails if neither has it."""
    local = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        pytest.fail("Azurite is not installed: run `make install` (it installs .tools/azurite).")
    return found


def start_azurite(
    tmp_dir: Path,
    *,
    https_cert: Path | None = None,
    https_key: Path | None = None,
    oauth: bool = False,
) -> Azurite:
    """Start Azurite's blob service on 127.0.0.1 and a free port, its data under `tmp_dir`."""
    data = tmp_dir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        find_azurite(),
        *("--blobHost", "127.0.0.1", "--blobPort", "0", "--location", str(data)),
        *("--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"),
    ]
    if https_cert is not None and https_key is not None:
        args += ["--cert", str(https_cert), "--key", str(https_key)]
    if oauth:
        args += ["--oauth", "basic"]
    log_path = tmp_dir / "azurite.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    # Port 0: Azurite binds a free port itself and says which, so parallel workers never race.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return Azurite(proc, match[1], int(match[2]), log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"Azurite did not start: {log_path.read_text(errors='replace')}")


def make_server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 from it: (ca.pem, cert.pem, key.pem)."""
    ca_cert, ca_key = ensure_pool_ca(directory)
    cert, key = directory / "azurite.pem", directory / "azurite.key"
    issue_certificate(ca_cert, ca_key, cert, key, names=["127.0.0.1", "localhost"])
    return ca_cert, cert, key


def make_container(azurite: Azurite, name: str) -> str:
    """Create container `name` with the account key; return its URL."""
    with azurite.service_client() as service:
        service.create_container(name)
    return azurite.container_url(name)


def container_sas(
    azurite: Azurite,
    container: str,
    permissions: ContainerSasPermissions = ALL_PERMISSIONS,
    expiry: datetime.timedelta = datetime.timedelta(hours=1),
) -> str:
    """A service SAS for `container` (without a leading "?")."""
    return generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=permissions,
        expiry=datetime.datetime.now(datetime.UTC) + expiry,
    )


@pytest.fixture(scope="module", name="azurite")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite over plain HTTP (SAS and account-key access)."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="module", name="azurite_https")
def azurite_https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite over HTTPS with OAuth (bearer tokens) on; `.ca_path` is the CA to trust."""
    tmp = tmp_path_factory.mktemp("azurite-https")
    ca, cert, key = make_server_certificate(tmp / "tls")
    server = start_azurite(tmp, https_cert=cert, https_key=key, oauth=True)
    server.ca_path = ca
    yield server
    server.stop()
