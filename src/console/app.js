// The provisiond console: plain JavaScript over the admin API. The admin key lives in
// this tab's session storage and travels only in the Authorization header. Everything
// shown is set as text (never as HTML), so nothing a device sends can become markup.
"use strict";

const KEY = "provisiond-admin-key";
const $ = (id) => document.getElementById(id);
const sections = ["sign-in", "overview", "devices", "refusals"];
let timer = null;

function adminKey() { return sessionStorage.getItem(KEY); }

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + adminKey() };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    if (response.status === 401) signOut("The admin key was not accepted.");
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText);
  }
  return body;
}

function show(name) {
  for (const id of sections) $(id).hidden = id !== name;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.id === "nav-" + name);
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  $("nav").hidden = true;
  $("sign-in-error").textContent = message || "";
  if (timer) clearInterval(timer);
  timer = null;
  show("sign-in");
}

function row(table, cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  table.querySelector("tbody").appendChild(tr);
  return tr;
}

function clear(table) { table.querySelector("tbody").replaceChildren(); }

function confirmAction(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function notice(text) { $("notice").textContent = text; }

// One time format everywhere: UTC, to the second, as the API and the logs give it.
function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toISOString().slice(0, 19).replace("T", " ");
}

// Overview ---------------------------------------------------------------------------

async function refreshOverview() {
  const health = await fetch("/health", { cache: "no-store" }).then((r) => r.json());
  const status = $("status");
  status.textContent = health.status;
  status.className = "big status-" + health.status;
  const reasons = {
    ok: "Redis answers; tokens go to " + health.storage + ".",
    degraded: "Redis is unreachable: tokens are issued into memory.",
    unavailable: "Redis is required and unreachable: onboarding answers 503.",
  };
  $("status-reason").textContent = health.redis.enabled ? reasons[health.status] || "" : "Redis is off: the memory store serves.";
  $("storage").textContent = health.storage;
  $("redis").textContent = health.redis.enabled
    ? "Redis " + (health.redis.connected ? "connected" : "disconnected") + " (" + (health.redis.mode || "") +
      (health.redis.primaries ? ", " + health.redis.primaries + " primaries" : "") + ")"
    : "Redis off";
  const tokens = health.redis.enabled ? health.redis.tokenCount : health.memory.tokenCount;
  $("pending").textContent = tokens === null ? "…" : tokens + " tokens";
  $("counted-at").textContent = health.redis.countedAt
    ? health.redis.deviceCount + " devices, counted " + when(health.redis.countedAt) + " UTC"
    : "";

  const activity = await api("/api/v1/activity");
  $("issued").textContent = activity.totals.tokens_issued + " tokens";
  $("certificates").textContent = activity.totals.certificates_issued + " certificates issued";
  const reasonsTable = $("reasons");
  clear(reasonsTable);
  const codes = Object.entries(activity.totals.refusals).sort((a, b) => b[1] - a[1]);
  for (const [code, n] of codes) row(reasonsTable, [code, n]);
  if (codes.length === 0) row(reasonsTable, ["none", ""]);
  drawChart(activity);
}

function drawChart(activity) {
  const svg = $("chart");
  const start = activity.now - activity.window_seconds + 1;
  const series = { tokens: [], certificates: [], refused: [] };
  const bySecond = new Map(activity.seconds.map((s) => [s.at, s]));
  for (let t = start; t <= activity.now; t++) {
    const s = bySecond.get(t) || { tokens: 0, certificates: 0, refused: 0, errors: 0 };
    series.tokens.push(s.tokens);
    series.certificates.push(s.certificates);
    series.refused.push(s.refused + s.errors);
  }
  const top = Math.max(1, ...series.tokens, ...series.certificates, ...series.refused);
  svg.replaceChildren();
  // Grid lines at the axis labels: a quarter, half and three quarters of the peak, and
  // every five minutes.
  for (const [x1, y1, x2, y2] of [[0, 102.5, 900, 102.5], [0, 56.25, 900, 56.25], [0, 148.75, 900, 148.75],
    [300, 0, 300, 200], [600, 0, 600, 200]]) {
    const grid = document.createElementNS("http://www.w3.org/2000/svg", "line");
    grid.setAttribute("class", "grid");
    grid.setAttribute("x1", x1); grid.setAttribute("y1", y1);
    grid.setAttribute("x2", x2); grid.setAttribute("y2", y2);
    svg.appendChild(grid);
  }
  const colors = { tokens: "var(--tokens)", certificates: "var(--certificates)", refused: "var(--refused)" };
  for (const [name, values] of Object.entries(series)) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", values.map((v, i) => i + "," + (195 - (v / top) * 185)).join(" "));
    line.setAttribute("stroke", colors[name]);
    line.setAttribute("data-series", name);
    line.setAttribute("data-total", String(values.reduce((a, b) => a + b, 0)));
    svg.appendChild(line);
  }
  svg.setAttribute("aria-label", "peak " + top + " per second over the last 15 minutes");
  $("chart-top").textContent = top + "/s";
  $("chart-now").textContent = "now (" + when(new Date(activity.now * 1000).toISOString()).slice(11) + " UTC)";
}

// Devices ----------------------------------------------------------------------------

async function loadDevice(id) {
  $("device-error").textContent = "";
  notice("");
  let status, events;
  try {
    status = await api("/api/v1/devices/" + encodeURIComponent(id));
    events = await api("/api/v1/devices/" + encodeURIComponent(id) + "/events");
  } catch (e) {
    $("device").hidden = true;
    $("device-error").textContent = e.code + ": " + e.message;
    return;
  }
  $("device").hidden = false;
  $("device-title").textContent = status.device_id;
  const unknown = !status.pending && !status.blocked && status.certificates.length === 0;
  $("device-unknown").hidden = !unknown;
  $("device-blocked").textContent = status.blocked
    ? "Blocked since " + when(status.blocked.blocked_at) + " UTC (" + status.blocked.reason + ")"
    : "Not blocked";
  $("device-pending").textContent = status.pending
    ? "Pending token until " + when(status.expires_at) + " UTC (" + status.expires_in + " s)"
    : "No pending token";
  $("revoke-token").disabled = !status.pending;
  $("revoke-device").disabled = !status.certificates.some((c) => c.status === "valid") && !status.pending;
  $("block-device").disabled = Boolean(status.blocked);
  $("block-device").textContent = unknown ? "Block this id" : "Revoke and block";
  $("unblock-device").disabled = !status.blocked;
  const certs = $("certificates-table");
  clear(certs);
  for (const c of status.certificates) {
    let action = "";
    if (c.status === "valid") {
      action = document.createElement("button");
      action.type = "button";
      action.className = "danger";
      action.textContent = "Revoke";
      action.addEventListener("click", () => revokeCertificate(status.device_id, c.serial_number));
    }
    const tr = row(certs, [c.serial_number, c.key_type, c.group, when(c.expires_at),
      c.status + (c.reason ? " (" + c.reason + ")" : ""), action]);
    tr.cells[0].className = "mono";
  }
  if (status.certificates.length === 0) row(certs, ["none", "", "", "", "", ""]);
  const table = $("events-table");
  clear(table);
  for (const e of events.events) row(table, [when(e.at), e.event, e.detail, e.client_ip, e.admin || ""]);
  if (events.events.length === 0) row(table, ["none", "", "", "", ""]);
}

let fleetCursor = null;

async function listFleet(more) {
  $("device-error").textContent = "";
  notice("");
  const params = new URLSearchParams();
  const prefix = $("fleet-prefix").value.trim();
  if (prefix) params.set("prefix", prefix);
  if ($("fleet-state").value) params.set("state", $("fleet-state").value);
  const group = $("fleet-group").value.trim();
  if (group) params.set("group", group);
  if ($("fleet-expiring").value) params.set("expiring_within_days", $("fleet-expiring").value);
  params.set("limit", "50");
  if (more && fleetCursor) params.set("cursor", fleetCursor);
  const table = $("fleet-table");
  if (!more) clear(table);
  let page;
  try {
    page = await api("/api/v1/devices?" + params.toString());
  } catch (e) {
    $("device-error").textContent = e.code + ": " + e.message;
    return;
  }
  $("fleet").hidden = false;
  $("device").hidden = true;
  for (const d of page.devices) {
    const link = document.createElement("a");
    link.href = "#/devices/" + encodeURIComponent(d.device_id);
    link.textContent = d.device_id;
    row(table, [link, d.state, d.group || "", d.valid_certificates + " / " + d.certificates,
      when(d.valid_until), d.pending ? "yes" : ""]);
  }
  fleetCursor = page.next_cursor;
  $("fleet-more").hidden = !fleetCursor;
  if (!more && page.devices.length === 0 && !fleetCursor) row(table, ["none", "", "", "", "", ""]);
}

async function act(id, question, path, method, body, done) {
  if (!(await confirmAction(question))) return;
  let failed = null;
  try {
    await api(path, { method, body });
  } catch (e) {
    failed = e;
  }
  await loadDevice(id);
  if (failed) $("device-error").textContent = failed.code + ": " + failed.message;
  else notice(done);
}

function currentDevice() { return $("device-title").textContent; }

function reason() { return $("revoke-reason").value; }

function revokeCertificate(id, serial) {
  return act(id, "Revoke certificate " + serial + " (" + reason() + ")?", "/api/v1/certificates/" + serial + "/revoke",
    "POST", { reason: reason() }, "Certificate " + serial + " revoked.");
}

// Refusals ---------------------------------------------------------------------------

async function loadRefusals() {
  const code = $("refusal-code").value;
  const answer = await api("/api/v1/refusals" + (code ? "?code=" + encodeURIComponent(code) : ""));
  const table = $("refusals-table");
  clear(table);
  for (const r of answer.refusals) {
    row(table, [when(r.at), r.method + " " + r.route, r.status, r.code, r.device_id || "-", r.client_ip]);
  }
  if (answer.refusals.length === 0) row(table, ["none", "", "", "", "", ""]);
  const select = $("refusal-code");
  const known = new Set([...select.options].map((o) => o.value));
  const totals = (await api("/api/v1/activity")).totals.refusals;
  for (const c of Object.keys(totals)) {
    if (!known.has(c)) select.appendChild(new Option(c, c));
  }
}

// Routing ----------------------------------------------------------------------------

async function route() {
  if (!adminKey()) { signOut(); return; }
  $("nav").hidden = false;
  const [, page, id] = (location.hash || "#/overview").split("/");
  if (timer) clearInterval(timer);
  timer = null;
  try {
    if (page === "devices") {
      show("devices");
      if (id) {
        $("fleet").hidden = true;
        $("device-id").value = decodeURIComponent(id);
        await loadDevice(decodeURIComponent(id));
      } else {
        await listFleet(false);
      }
    } else if (page === "refusals") {
      show("refusals");
      await loadRefusals();
      timer = setInterval(() => loadRefusals().catch(() => {}), 3000);
    } else {
      show("overview");
      await refreshOverview();
      timer = setInterval(() => refreshOverview().catch(() => {}), 2000);
    }
  } catch (e) {
    if (e.status !== 401) notice("");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("admin-key").value);
    $("admin-key").value = "";
    try {
      await api("/api/v1/activity");
    } catch (e) {
      if (e.status !== 401) $("sign-in-error").textContent = e.code + ": " + e.message;
      return;
    }
    $("sign-in-error").textContent = "";
    if (!location.hash || location.hash === "#/") location.hash = "#/overview";
    await route();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("device-search").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = "#/devices/" + encodeURIComponent($("device-id").value.trim());
  });
  $("refusal-code").addEventListener("change", () => loadRefusals().catch(() => {}));
  $("fleet-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    if (location.hash !== "#/devices") location.hash = "#/devices";
    else listFleet(false);
  });
  $("fleet-more").addEventListener("click", () => listFleet(true));
  $("revoke-token").addEventListener("click", () => {
    const id = currentDevice();
    return act(id, "Revoke the pending token of " + id + "?",
      "/api/v1/devices/" + encodeURIComponent(id) + "/token", "DELETE", undefined, "Pending token revoked.");
  });
  $("revoke-device").addEventListener("click", () => {
    const id = currentDevice();
    return act(id, "Revoke every certificate and the pending token of " + id + " (" + reason() + ")?",
      "/api/v1/devices/" + encodeURIComponent(id) + "/revoke", "POST", { reason: reason() },
      "Certificates and token revoked.");
  });
  $("block-device").addEventListener("click", () => {
    const id = currentDevice();
    return act(id, "Revoke everything of " + id + " (" + reason() + ") and block it from onboarding and renewal?",
      "/api/v1/devices/" + encodeURIComponent(id) + "/revoke", "POST", { reason: reason(), block: true },
      "Device revoked and blocked.");
  });
  $("unblock-device").addEventListener("click", () => {
    const id = currentDevice();
    return act(id, "Lift the block on " + id + "?",
      "/api/v1/devices/" + encodeURIComponent(id) + "/block", "DELETE", undefined, "Block lifted.");
  });
  window.addEventListener("hashchange", route);
  route();
});
