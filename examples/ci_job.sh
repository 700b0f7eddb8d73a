#!/usr/bin/env bash
# A CI job that tests an application against a throwaway Managed HSM: `mhsm up --dev` starts a
# one-partition pool on SQLite in a couple of seconds, activated, with an administrator who may
# use keys; `mhsm env` exports what DefaultAzureCredential and the SDK need; `mhsm down` stops it.
# Nothing leaves the machine: no Azure subscription, no network beyond 127.0.0.1.
#
#   examples/ci_job.sh                        # what a CI step runs (see ci_job.yml)
#   MHSM_DATA_DIR=/tmp/hsm MHSM_PORT=9443 examples/ci_job.sh
#
# Replace the "tests" step with your own test command; everything it starts inherits the pool's
# environment (MHSM_URL, REQUESTS_CA_BUNDLE, AZURE_*, IDENTITY_*).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="${MHSM_DATA_DIR:-$(mktemp -d)}"
port="${MHSM_PORT:-8443}"

# Start the pool in the background; it returns once the pool serves requests.
mhsm up --dev --data-dir "$data_dir" --port "$port" --detach
# Stop it however the job ends, so a failed test does not leave a server behind.
trap 'mhsm down --data-dir "$data_dir"' EXIT

# MHSM_URL (https://127.0.0.1:<port>: never bare `localhost`, which the SDK's challenge check
# refuses), the pool CA and the credentials, as shell exports.
eval "$(mhsm env --data-dir "$data_dir")"

# The tests. First a smoke check that the pool is up and activated (SSL_CERT_FILE, which
# `mhsm env` exports too, makes Python's ssl trust the pool CA)...
python - <<'PY'
import json, os, urllib.request

with urllib.request.urlopen(os.environ["MHSM_URL"] + "/readyz") as response:
    state = json.load(response)["state"]
assert state == "Active", state
PY
# ... then an unmodified app using DefaultAzureCredential (your test suite goes here).
python "$here/default_credential_app.py" ci-signing-key
echo "ci job: passed against $MHSM_URL"
