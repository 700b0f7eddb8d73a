// OpenMHSM dashboard: signs in with the Key Vault challenge and the pool's token endpoint, then
// polls /openmhsm/dashboard. The token lives in this closure only (never in storage or a URL);
// the secret is sent once, to this origin's token endpoint, and the field is cleared.
// Everything from the pool is written with textContent: audit records carry caller-chosen text.
"use strict";

(() => {
  const DATA_URL = "/openmhsm/dashboard?api-version=7.6";
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;
  const HISTORY = 150; // chart samples kept (5 minutes at one per refresh)
  const SVG = "http://www.w3.org/2000/svg";

  let token = null;
  let timer = null;
  let previous = null;
  const availabilityHistory = [];
  const rateHistory = [];

  const $ = (id) => document.getElementById(id);

  // --- signing in ------------------------------------------------------------------------

  async function timedFetch(url, options = {}) {
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      return await fetch(url, { ...options, signal: abort.signal, cache: "no-store",
                                credentials: "omit", redirect: "error" });
    } finally {
      clearTimeout(timeout);
    }
  }

  // The 401 challenge names the tenant's authority and the resource (the token audience), as
  // the Azure SDK reads them. Only the authority's path is used: the token request stays on
  // this origin, whatever the challenge says.
  async function readChallenge() {
    const response = await timedFetch(DATA_URL);
    if (response.status !== 401) {
      throw new Error(`Expected the pool's authentication challenge, got HTTP ${response.status}.`);
    }
    const header = response.headers.get("WWW-Authenticate") || "";
    const params = {};
    for (const match of header.matchAll(/(\w+)="([^"]*)"/g)) params[match[1]] = match[2];
    if (!params.authorization || !params.resource) {
      throw new Error("The pool's challenge names no authority or resource.");
    }
    const tenantPath = new URL(params.authorization).pathname.replace(/\/+$/, "");
    return { tokenPath: `${tenantPath}/oauth2/v2.0/token`, resource: params.resource };
  }

  async function requestToken(clientId, secret) {
    const { tokenPath, resource } = await readChallenge();
    const form = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: clientId,
      client_secret: secret,
      scope: `${resource}/.default`,
    });
    const response = await timedFetch(tokenPath, { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.access_token) {
      throw new Error(body.error_description || `The token endpoint answered HTTP ${response.status}.`);
    }
    return body.access_token;
  }

  function start(newToken) {
    token = newToken;
    previous = null;
    availabilityHistory.length = 0;
    rateHistory.length = 0;
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    $("sign-in-error").textContent = "";
    setStatus("Loading…");
    refresh();
  }

  function signOut(message) {
    token = null;
    clearTimeout(timer);
    timer = null;
    $("dashboard").hidden = true;
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
    $("sign-in-error").textContent = message || "";
    setStatus("Signed out");
  }

  // The browser test hands a token over in the fragment, which never reaches a server; it is
  // wiped from the address bar and history before anything else happens.
  function takeFragmentToken() {
    if (!location.hash) return null;
    const given = new URLSearchParams(location.hash.slice(1)).get("token");
    history.replaceState(null, "", location.pathname + location.search);
    return given;
  }

  // --- polling ---------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    if (token === null) return;
    try {
      const response = await timedFetch(DATA_URL, { headers: { Authorization: `Bearer ${token}` } });
      if (response.status === 401) {
        signOut("The token was refused or has expired: sign in again.");
        return;
      }
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const message = body.error && body.error.message ? body.error.message : "";
        if (response.status === 403) {
          signOut(`Not allowed: the dashboard is for Managed HSM Administrators. ${message}`);
          return;
        }
        throw new Error(`HTTP ${response.status} ${message}`);
      }
      render(body);
      setStatus(`Updated ${new Date(body.time * 1000).toLocaleTimeString()}`);
    } catch (error) {
      setStatus(`Refresh failed: ${error.message || error}; retrying`, true);
    }
    if (token !== null) timer = setTimeout(refresh, REFRESH_MS);
  }

  function setStatus(text, bad = false) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("bad", bad);
  }

  // --- rendering -------------------------------------------------------------------------

  function render(doc) {
    $("dashboard").hidden = false;
    $("pool-name").textContent = doc.pool && doc.pool.name ? `— ${doc.pool.name}` : "";
    $("served-by").textContent = `as partition ${doc.partition} sees it`;
    renderPartitions(doc.partitions);
    renderEtcd(doc.etcd);
    renderAvailability(doc);
    renderOperations(doc);
    renderRegion(doc.region || {});
    renderBackups(doc.backups || []);
    renderEvents(doc.supervisor);
    renderAudit(doc.audit || []);
    previous = doc;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "—" : String(text);
    if (className) td.className = className;
    return td;
  }

  // `kind`: true (good), false (bad) or "warn".
  function badge(text, kind) {
    const td = document.createElement("td");
    const span = document.createElement("span");
    span.className = `badge ${kind === "warn" ? "warn" : kind ? "good" : "bad"}`;
    span.textContent = text;
    td.append(span);
    return td;
  }

  function fillTable(id, rows, emptyText) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...rows);
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(emptyText, "empty");
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.append(td);
      body.append(tr);
    }
  }

  const ms = (value) => (value === null || value === undefined ? null : `${value} ms`);
  const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : null);

  function renderPartitions(partitions) {
    const rows = partitions.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.partition = String(p.id);
      tr.dataset.state = p.up ? "up" : "down";
      const supervisor = p.supervisor_ready === undefined || p.supervisor_ready === null
        ? null : p.supervisor_ready ? "ready" : "starting";
      tr.append(cell(p.id), badge(p.up ? "up" : "down", p.up), cell(p.pid), cell(p.state),
                cell(p.up ? ms(p.probe_ms) : p.error), cell(supervisor), cell(p.url));
      return tr;
    });
    fillTable("partitions", rows, "No partition listed.");
  }

  function renderEtcd(members) {
    const rows = members.map((m) => {
      const tr = document.createElement("tr");
      tr.dataset.member = m.name;
      tr.dataset.state = m.healthy ? "healthy" : "unhealthy";
      tr.append(cell(m.name), badge(m.healthy ? "healthy" : "unhealthy", m.healthy), cell(m.pid),
                cell(m.healthy ? ms(m.probe_ms) : m.error), cell(m.client_url, "wrap"));
      return tr;
    });
    fillTable("etcd", rows, "No etcd members (an embedded dev pool).");
  }

  const percent = (ratio) => `${(ratio * 100).toFixed(3)}%`;

  function renderAvailability(doc) {
    const availability = doc.availability || {};
    $("availability-1m").textContent = `last minute ${percent(availability["1m"] ?? 1)}`;
    $("availability-1h").textContent = `last hour ${percent(availability["1h"] ?? 1)}`;
    push(availabilityHistory, availability["1m"] ?? 1);
    drawChart($("availability-chart"), availabilityHistory, 0, 1);
  }

  // Rates are differences between two refreshes answered by the same partition: each
  // partition counts only the requests it served.
  function rates(doc) {
    const out = new Map();
    if (!previous || previous.partition !== doc.partition) return out;
    const seconds = doc.time - previous.time;
    if (seconds <= 0) return out;
    const before = new Map(previous.operations.map((o) => [o.operation, o.count]));
    for (const o of doc.operations) {
      out.set(o.operation, Math.max(0, o.count - (before.get(o.operation) || 0)) / seconds);
    }
    return out;
  }

  function renderOperations(doc) {
    const perOperation = rates(doc);
    if (perOperation.size > 0) {
      let total = 0;
      for (const rate of perOperation.values()) total += rate;
      push(rateHistory, total);
      $("rate-total").textContent = `${total.toFixed(1)} requests/s on partition ${doc.partition}`;
    }
    drawChart($("rate-chart"), rateHistory, 0, Math.max(1, ...rateHistory));
    const rows = doc.operations.map((o) => {
      const tr = document.createElement("tr");
      const rate = perOperation.has(o.operation) ? perOperation.get(o.operation).toFixed(2) : null;
      tr.append(cell(o.operation, "mono"), cell(o.count, "num"), cell(rate, "num"),
                cell(o.client_errors, "num"), cell(o.server_errors, "num"),
                cell(o.mean_ms, "num"), cell(o.p50_ms, "num"), cell(o.p99_ms, "num"));
      return tr;
    });
    fillTable("operations", rows, "No requests yet.");
  }

  function renderRegion(region) {
    const entries = [["Role", region.role]];
    if (region.primary_url) entries.push(["Primary", region.primary_url]);
    if (region.regions && region.regions.length) entries.push(["Regions", region.regions.join(", ")]);
    if (region.lag_seconds !== undefined) {
      entries.push(["Lag", `${region.lag_seconds.toFixed(3)} s, ${region.lag_revisions} revisions`]);
      entries.push(["Applied revision", `${region.applied_revision} of ${region.source_revision}`]);
    } else if (region.role === "extended") {
      entries.push(["Lag", "unknown (no recent report)"]);
    }
    const list = $("region");
    list.replaceChildren();
    for (const [term, value] of entries) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value === null || value === undefined ? "—" : String(value);
      list.append(dt, dd);
    }
  }

  function renderBackups(jobs) {
    const rows = jobs.map((job) => {
      const tr = document.createElement("tr");
      const ok = job.status === "Failed" ? false : job.status === "InProgress" ? "warn" : true;
      const detail = job.error && job.error.message ? job.error.message
        : job.azureStorageBlobContainerUri || job.statusDetails;
      tr.append(cell(job.jobId, "mono"), cell(job.kind), badge(job.status, ok),
                cell(when(job.startTime)), cell(when(job.endTime)), cell(detail, "wrap"));
      return tr;
    });
    fillTable("backups", rows, "No backup or restore in the last seven days.");
  }

  function renderEvents(supervisor) {
    const events = supervisor ? supervisor.events : [];
    const rows = events.map((event) => {
      const tr = document.createElement("tr");
      const { time, event: what, ...details } = event;
      const text = Object.entries(details).map(([k, v]) => `${k}=${v}`).join(" ");
      tr.append(cell(when(time)), cell(what), cell(text, "wrap"));
      return tr;
    });
    fillTable("events", rows, supervisor ? "No events." : "No supervisor (an embedded dev pool).");
  }

  function renderAudit(records) {
    const rows = records.map((r) => {
      const tr = document.createElement("tr");
      const who = r.principal ? r.principal.name || r.principal.client_id : "anonymous";
      const status = r.error_code ? `${r.status} ${r.error_code}` : r.status;
      tr.append(cell(r.time, "mono"), cell(who), cell(r.operation, "mono"),
                cell(r.resource, "mono wrap"),
                badge(String(status), r.status < 400 ? true : r.status < 500 ? "warn" : false),
                cell(r.partition, "num"), cell(r.latency_ms, "num"));
      return tr;
    });
    fillTable("audit", rows, "No audit events.");
  }

  function push(history, value) {
    history.push(value);
    if (history.length > HISTORY) history.shift();
  }

  function drawChart(svg, values, low, high) {
    const [width, height] = [300, 80];
    const line = document.createElementNS(SVG, "polyline");
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    const span = high - low || 1;
    line.setAttribute("points", values.map((v, i) =>
      `${(i * step).toFixed(1)},${(height - ((v - low) / span) * (height - 4) - 2).toFixed(1)}`).join(" "));
    line.setAttribute("class", "line");
    const base = document.createElementNS(SVG, "line");
    for (const [name, value] of [["x1", 0], ["x2", width], ["y1", height - 1], ["y2", height - 1]]) {
      base.setAttribute(name, String(value));
    }
    base.setAttribute("class", "axis");
    svg.replaceChildren(base, line);
  }

  // --- wiring ----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("credentials-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const secretField = $("client-secret");
      const clientId = $("client-id").value.trim();
      const secret = secretField.value;
      secretField.value = "";
      setStatus("Signing in…");
      try {
        start(await requestToken(clientId, secret));
      } catch (error) {
        signOut(error.message || String(error));
      }
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const field = $("token");
      const given = field.value.trim();
      field.value = "";
      if (given) start(given);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    const given = takeFragmentToken();
    if (given) start(given);
  });
})();
