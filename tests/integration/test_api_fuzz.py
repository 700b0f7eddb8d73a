"""Schema fuzzing of a running dev pool (issue 10): schemathesis reads the pool's own
`/openapi.json` and sends every documented operation a bounded number of generated requests.

Checks on every response: no 5xx (`not_a_server_error`), a documented status, a documented media
type, and a body matching the documented schema. Generation is derandomized (the same requests on
every run) and shrinking is off (a failure is reported with the request that found it, and a
failing run does not spend minutes shrinking).

Steering (`_steer`): path parameters and some bodies are generated from the document, then, on a
share of the examples chosen by Hypothesis itself, replaced by objects that exist in the pool,
so that requests reach the services behind the 404s and 400s: keys of each type and their
versions, a deleted key, a real backup folder and job, a principal, a built-in role, the known
setting, the pool's tenant; and bodies no generator finds: a private JWK to import, a key backup
blob, wrapping certificates, a valid role assignment, a well-formed token request.

Destructive operations run too, since the pool is thrown away: delete, purge and recover (on keys
set aside for them), full backup and full restore (into and from a directory of this test: a
storage URI is never sent as generated, so that no request reaches another host or writes outside
the test's directory), security-domain download (with real certificates; the pool stays active)
and upload (refused: the pool is not in recovery mode). A started job is waited out before the
next request, so a full restore's 503s (the pool refuses calls while its contents are replaced)
are not mistaken for errors.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ec
from dev_pool import DevPool, start_pool
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from keys_support import API, b64u, raw_client
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from openmhsm.auth.roles import CRYPTO_USER
from openmhsm.cli.activation import certificate_jwk, make_wrapping_keys

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20  # per operation, of requests the document allows
ALIAS_EXAMPLES = 8  # per route that serves the same handler as another
NEGATIVE_EXAMPLES = 5  # per operation, of requests it does not allow
# To dig deeper locally: more examples, and other ones than CI's (a seed instead of derandomize).
SCALE = int(os.environ.get("OPENMHSM_FUZZ_SCALE", "1"))
SEED = os.environ.get("OPENMHSM_FUZZ_SEED")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
JOB_TIMEOUT = 60.0
SETTING = "AllowKeyManagementOperationsThroughARM"
KEEP = None  # a steering choice: leave the generated value as it is
FUZZ_ASSIGNMENT = "6a1f3f2e-5b7c-4d8e-9f01-23456789abcd"

# Keys made before fuzzing: (name, create body). The victims are there to be deleted and purged;
# the others keep serving the reads and the crypto operations.
KEYS = {
    "fuzz-rsa": {"kty": "RSA-HSM", "key_size": 2048},
    "fuzz-ec": {"kty": "EC-HSM", "crv": "P-256"},
    "fuzz-oct": {"kty": "oct-HSM", "key_size": 256},
    "fuzz-victim": {"kty": "EC-HSM"},
    "fuzz-deleted": {"kty": "oct-HSM"},
}
LIVE_KEYS = ("fuzz-rsa", "fuzz-ec", "fuzz-oct")


@dataclass
class Known:
    """What exists in the pool before fuzzing, for the steering to point at."""

    container: str  # file:// URL of this test's backup directory
    versions: dict[str, str] = field(default_factory=dict)  # key name -> its version
    folder: str = ""  # a full backup's folder in `container`
    backup_job: str = ""
    restore_job: str = ""
    principal: str = ""  # client id of a principal fuzzing may delete
    principal_object_id: str = ""
    certificates: list[dict[str, Any]] = field(default_factory=list)
    tenant: str = ""
    resource: str = ""
    import_jwk: dict[str, str] = field(default_factory=dict)  # a private EC key to import
    key_backup: str = ""  # a single-key backup blob of fuzz-victim


def _wait_job(session: requests.Session, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        status: dict[str, Any] = session.get(status_url, timeout=30).json()
        if str(status.get("status", "")).lower() not in ("inprogress", ""):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the job at {status_url} did not end: {status}")
        time.sleep(0.05)


def _ec_private_jwk() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(numbers.public_numbers.x.to_bytes(32, "big")),
        "y": b64u(numbers.public_numbers.y.to_bytes(32, "big")),
        "d": b64u(numbers.private_value.to_bytes(32, "big")),
    }


def _prepare(pool: DevPool, tmp: Path) -> Known:
    known = Known(container=f"file://{tmp}/backups", tenant=pool.doc["tenant_id"])
    known.resource = pool.doc["resource"]
    known.import_jwk = _ec_private_jwk()
    with raw_client(pool) as http:
        for name, body in KEYS.items():
            made = http.post(f"/keys/{name}/create", params=API, json=body)
            assert made.status_code == 200, made.text
            known.versions[name] = made.json()["key"]["kid"].rsplit("/", 1)[1]
        assert http.delete("/keys/fuzz-deleted", params=API).status_code == 200
        known.key_backup = http.post("/keys/fuzz-victim/backup", params=API).json()["value"]
        principal = http.post(
            "/openmhsm/principals", params=API, json={"name": "fuzz-principal"}
        ).json()
        known.principal = principal["client_id"]
        known.principal_object_id = principal["object_id"]
        started = http.post("/backup", params=API, json={"storageResourceUri": known.container})
        assert started.status_code == 202, started.text
    with _session(pool) as session:
        done = _wait_job(session, started.headers["Azure-AsyncOperation"])
        assert done["status"] == "Succeeded", done
        known.backup_job = done["jobId"]
        known.folder = done["azureStorageBlobContainerUri"].rsplit("/", 1)[1]
        sas = {"storageResourceUri": known.container}
        body = {"sasTokenParameters": sas, "folderToRestore": known.folder}
        checked = session.put(f"{pool.url}/prerestore", params=API, json=body, timeout=30)
        done = _wait_job(session, checked.headers["Azure-AsyncOperation"])
        assert done["status"] == "Succeeded", done
        known.restore_job = done["jobId"]
    certs = [cert for cert, _ in make_wrapping_keys(3, tmp / "wrapping")]
    known.certificates = [certificate_jwk(cert) for cert in certs]
    return known


class _Session(requests.Session):
    """Sends `path` as it is: schemathesis joins URLs with urljoin, which drops the empty segment
    of `/keys/{name}//sign` (the SDKs' "latest version"), so that such a request reached
    another route."""

    path: str | None = None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> Any:
        if self.path is not None and "//" in self.path and isinstance(url, str):
            url = urlunsplit(urlsplit(url)._replace(path=quote(self.path)))
        return super().request(method, url, *args, **kw)


def _session(pool: DevPool) -> _Session:
    session = _Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace `verify`
    session.verify = pool.ca
    session.headers["Authorization"] = f"Bearer {pool.token()}"
    return session


@dataclass
class Fuzzed:
    pool: DevPool
    known: Known
    schema: Any


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("fuzz")
    pool = start_pool(tmp)
    try:
        known = _prepare(pool, tmp)
        schema = schemathesis.openapi.from_url(f"{pool.url}/openapi.json", verify=pool.ca)
        yield Fuzzed(pool, known, schema)
    finally:
        pool.stop()


# --- steering -----------------------------------------------------------------------------


def _name_choices(method: str, path: str) -> list[str | None]:
    if path.startswith("/settings/"):
        return [KEEP, SETTING]
    if method == "DELETE" and path == "/keys/{name}":
        return [KEEP, "fuzz-victim"]
    if path.startswith("/deletedkeys/"):
        return [KEEP, "fuzz-deleted", "fuzz-victim"]
    return [KEEP, *LIVE_KEYS]


def _storage(value: Any, known: Known, use_known: bool) -> Any:
    """A generated storage URI is never sent: it could name any host or directory."""
    if isinstance(value, dict):
        return {**value, "storageResourceUri": known.container if use_known else "not-a-uri"}
    return value


def _replacement(method: str, path: str, body: dict[str, Any], known: Known) -> Any:
    """A body that gets past validation, for the operations whose generated bodies never do."""
    if path == "/securitydomain/download":
        return {"certificates": known.certificates, "required": 2}
    if path.endswith("/sign"):  # a SHA-256 digest's length
        return {**body, "value": b64u(bytes(32))}
    if (method, path) == ("PUT", "/keys/{name}"):
        return {"key": known.import_jwk}
    if path == "/keys/restore":
        return {"value": known.key_backup}
    if method == "PUT" and "/roleAssignments/" in path:
        role = f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{CRYPTO_USER}"
        return {"properties": {"principalId": known.principal_object_id, "roleDefinitionId": role}}
    if path == "/settings/{name}":
        return {"value": "false"}
    if path == "/{tenant}/oauth2/v2.0/token":  # a real client with a wrong secret
        return {
            "grant_type": "client_credentials",
            "client_id": known.principal,
            "client_secret": "not-the-secret",
            "scope": f"{known.resource}/.default",
        }
    return body


def _steer_body(method: str, path: str, body: Any, known: Known, pick: int) -> Any:
    if not isinstance(body, dict):
        return body
    if path in ("/backup", "/prebackup"):
        return _storage(body, known, pick != 0)
    if path in ("/restore", "/prerestore", "/keys/{name}/restore"):
        body = {**body, "sasTokenParameters": _storage(body.get("sasTokenParameters"), known, True)}
        if pick == 0:
            return body
        folder = "folder" if path.startswith("/keys/") else "folderToRestore"
        return {**body, folder: known.folder}
    return body if pick == 0 else _replacement(method, path, body, known)


def _steer(case: Any, known: Known, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """`case` with, on some examples, its path parameters and body pointed at known objects
    (requests meant to be invalid are left so, but for their storage URIs)."""
    method, path = case.operation.method.upper(), case.operation.path

    def apply(choices: tuple[str | None, int]) -> Any:
        name, pick = choices
        params = dict(case.path_parameters or {})
        if name is not None and "name" in params:
            params["name"] = name
            if "version" in params and pick != 0 and name in known.versions:
                params["version"] = known.versions[name]
        if pick != 0:
            replacements = {
                "job": known.restore_job if path.startswith("/restore/") else known.backup_job,
                "client_id": known.principal,
                "definition": CRYPTO_USER,
                "assignment": FUZZ_ASSIGNMENT,
                "tenant": known.tenant,
            }
            params.update({k: v for k, v in replacements.items() if k in params})
        case.path_parameters = params
        case.body = _steer_body(method, path, case.body, known, pick)
        return case

    if mode is GenerationMode.NEGATIVE:
        return st.just((KEEP, 0)).map(apply)
    names = _name_choices(method, path) if "{name}" in path else [KEEP]
    return st.tuples(st.sampled_from(names), st.integers(0, 1)).map(apply)


# --- the run ------------------------------------------------------------------------------


def _budget(label: str, mode: GenerationMode) -> int:
    """Examples for one operation in one mode. A route that serves the same handler as another
    (RBAC at the `/keys` scopes, the latest-version `//` spellings) gets fewer."""
    if mode is GenerationMode.NEGATIVE:
        return NEGATIVE_EXAMPLES * SCALE
    alias = "/keys/providers/" in label or "}/providers/" in label or "//" in label
    return (ALIAS_EXAMPLES if alias else MAX_EXAMPLES) * SCALE


@dataclass
class Tally:
    examples: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def _fuzz(
    operation: Any, mode: GenerationMode, known: Known, session: _Session, tally: Tally
) -> None:
    strategy = operation.as_strategy(mode).flatmap(lambda case: _steer(case, known, mode))

    def run(case: Any) -> None:
        tally.examples += 1
        session.path = case.formatted_path
        response = case.call_and_validate(session=session, checks=CHECKS, verify=session.verify)
        tally.statuses[response.status_code] += 1
        location = response.headers.get("azure-asyncoperation")  # lower-cased, a list
        if response.status_code == 202 and location:
            _wait_job(session, location[0])

    test = settings(
        max_examples=_budget(operation.label, mode),
        derandomize=SEED is None,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(case=strategy)(run))
    if SEED is not None:  # a seed would override derandomize
        test = seed(int(SEED))(test)
    try:
        test()
    except Unsatisfiable:
        # Nothing to negate: an operation without parameters or body (GET /healthz).
        if mode is not GenerationMode.NEGATIVE or tally.examples:
            raise


def test_every_operation_survives_fuzzing(fuzzed: Fuzzed) -> None:
    started = time.monotonic()
    report: dict[str, Tally] = {}
    with _session(fuzzed.pool) as session:
        for result in fuzzed.schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                tally = report.setdefault(f"{operation.label} [{mode.value}]", Tally())
                begun = time.monotonic()
                try:
                    _fuzz(operation, mode, fuzzed.known, session, tally)
                # One operation's failure must not hide the others' (schemathesis raises a
                # group of failures).
                except (Exception, BaseExceptionGroup) as exc:
                    tally.failures.append(f"{type(exc).__name__}: {str(exc)[:3000]}")
                tally.seconds = time.monotonic() - begun
    elapsed = time.monotonic() - started
    lines = [
        f"{label}: {t.examples} examples in {t.seconds:.1f} s, "
        f"statuses {dict(sorted(t.statuses.items()))}"
        for label, t in report.items()
    ]
    total = sum(t.examples for t in report.values())
    print(f"\n{len(report)} runs, {total} requests in {elapsed:.0f} s", *lines, sep="\n")
    failed = {label: t.failures for label, t in report.items() if t.failures}
    assert not failed, "\n\n".join(f"{label}\n{chr(10).join(f)}" for label, f in failed.items())
    fuzzed_labels = {label.rsplit(" [", 1)[0] for label in report}
    documented = {
        f"{method.upper()} {path}"
        for path, item in fuzzed.schema.raw_schema["paths"].items()
        for method in item
        if method != "parameters"
    }
    # schemathesis leaves out the operation that served the schema it loaded.
    assert documented - fuzzed_labels == {"GET /openapi.json"}
