"""Which requests are safe to send twice, and the retry policy that acts on it (DESIGN §2).

azure-core's default policy retries no POST, and every crypto operation is a POST: a request in
flight on a partition that dies would fail on the client although sending it again is harmless.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

# The REST names of the key operations that are safe to send twice (API §1.1).
IDEMPOTENT_OPERATIONS = frozenset({"sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey"})
RETRY_SAFE_WRITES = frozenset({"create", "rotate"})
# The methods azure-core's RetryPolicy retries by default.
IDEMPOTENT_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE"})
# A pool replaces a dead partition in seconds: minutes of back-off would only delay the error.
RETRY_BACKOFF_FACTOR = 0.5
RETRY_BACKOFF_MAX = 8


class IdempotentRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy (exponential back-off) that also retries POSTs of idempotent key
    operations and of create/rotate (made idempotent by the pool), so a request in flight on a
    partition that dies is sent again to a live one. Other POSTs keep azure-core's rules."""

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if is_idempotent_post(request.http_request.method, request.http_request.url):
            request.context.options.setdefault("retry_on_methods", IDEMPOTENT_METHODS | {"POST"})
        return super().send(request)


def is_idempotent_post(method: str, url: str) -> bool:
    """True for `POST .../keys/{name}/{version}/{operation}` with an idempotent operation
    (the version may be empty: `/keys/{name}//sign`), and for `POST .../keys/{name}/create`
    and `/rotate`: the pool answers a retry of one of those (same `x-ms-client-request-id`,
    which azure-core keeps across retries) with the version the first attempt made."""
    if method.upper() != "POST":
        return False
    parts = urlsplit(url).path.split("/")
    if len(parts) >= 4 and parts[-3] == "keys" and parts[-1].lower() in RETRY_SAFE_WRITES:
        return True
    return len(parts) >= 5 and parts[-4] == "keys" and parts[-1].lower() in IDEMPOTENT_OPERATIONS


def may_send_again(method: str, url: str) -> bool:
    """Whether a request that may have reached a server can be sent once more without harm: an
    idempotent method (azure-core's retry list), or an idempotent POST (`is_idempotent_post`)."""
    return method.upper() in IDEMPOTENT_METHODS or is_idempotent_post(method, url)


def retry_policy() -> IdempotentRetryPolicy:
    """A new policy for one client (a policy instance belongs to one pipeline)."""
    return IdempotentRetryPolicy(
        retry_backoff_factor=RETRY_BACKOFF_FACTOR, retry_backoff_max=RETRY_BACKOFF_MAX
    )
