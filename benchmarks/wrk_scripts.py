"""Lua scripts for `wrk`: one fixed request (pre-formatted once by wrk, the cheapest case), or a
create whose key name is new on every request. Both print p50/p99 and the first failures."""

from __future__ import annotations

import json
from typing import Any

# Run in each thread's Lua state: count failures and keep the first one for the report.
_RESPONSE = """
failures = 0
first_failure = ""
response = function(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
    if first_failure == "" then first_failure = status .. " " .. string.sub(body, 1, 300) end
  end
end
"""

# Run in the main Lua state, which sees the threads through `setup`.
_SUMMARY = """
threads = {}
setup = function(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
done = function(summary, latency, requests)
  io.write(string.format("P50 %f\\nP99 %f\\n", latency:percentile(50), latency:percentile(99)))
  for _, thread in ipairs(threads) do
    local first = thread:get("first_failure")
    if first ~= nil and first ~= "" then
      io.write("FAILURE " .. string.gsub(first, "\\n", " ") .. "\\n")
    end
  end
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal for `text` (a JSON string literal is one, for what we put in it)."""
    return json.dumps(text)


def _headers(token: str, has_body: bool) -> str:
    lines = [f'wrk.headers["Authorization"] = {lua_string("Bearer " + token)}']
    if has_body:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    return "\n".join(lines) + "\n"


def fixed_request(method: str, token: str, body: dict[str, Any] | None = None) -> str:
    """The same request every time, to the URL given to wrk."""
    script = f"wrk.method = {lua_string(method)}\n"
    if body is not None:
        script += f"wrk.body = {lua_string(json.dumps(body))}\n"
    return script + _headers(token, body is not None) + _RESPONSE + _SUMMARY


def unique_create(path_prefix: str, path_suffix: str, token: str, body: dict[str, Any]) -> str:
    """POST `body` to `path_prefix + <thread>-<counter> + path_suffix`: a new name each time.
    The prefix should carry something random, so that two runs never collide."""
    script = (
        f"local prefix = {lua_string(path_prefix)}\n"
        f"local suffix = {lua_string(path_suffix)}\n"
        f"local create_body = {lua_string(json.dumps(body))}\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        '  return wrk.format("POST", prefix .. tid .. "-" .. counter .. suffix, nil, create_body)\n'
        "end\n"
    )
    return script + _headers(token, True) + _RESPONSE + _SUMMARY
