// aftercare's web desk: a single page over the collector's /api/v1, no build step.
// Everything shown comes from the API with the engineer's own token; nothing is computed
// here that the API does not say, except formatting and drawing.
"use strict";

const TOKEN_KEY = "aftercare.token";
const view = document.getElementById("view");
let refreshTimer = null;
let me = null; // {name, role} of the signed-in token

// ---- small helpers ------------------------------------------------------------------

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function h(html) {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch("/api/v1" + path, opts);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    if (resp.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      location.hash = "#/login";
    }
    throw new ApiError(resp.status, data?.code ?? "http_" + resp.status, data?.message ?? resp.statusText);
  }
  return data;
}

function hostPath(name) {
  const [c, ...rest] = name.split("/");
  return encodeURIComponent(c) + "/" + encodeURIComponent(rest.join("/"));
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 0) return "just now";
  if (s < 90) return s + "s ago";
  if (s < 5400) return Math.round(s / 60) + "m ago";
  if (s < 129600) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
}

function span(ms) {
  if (Math.abs(ms) < 60000) return Math.round(Math.abs(ms) / 1000) + "s";
  const m = Math.floor(Math.abs(ms) / 60000);
  if (m < 60) return m + "m";
  if (m < 1440) return Math.floor(m / 60) + "h" + (m % 60 ? (m % 60) + "m" : "");
  return Math.floor(m / 1440) + "d" + (Math.floor(m / 60) % 24 ? (Math.floor(m / 60) % 24) + "h" : "");
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

// A clock as the board shows it: time left, at risk, breached, or met/missed once stopped.
function clockCell(c) {
  if (!c) return "";
  const now = Date.now();
  const due = typeof c.due === "number" ? c.due : Date.parse(c.due);
  if (c.stopped) return `<span class="clock stopped">${c.state === "breached" ? "missed" : "met"}</span>`;
  if (c.state === "breached") return `<span class="clock breached">BREACHED ${span(now - due)} ago</span>`;
  if (c.state === "at_risk") return `<span class="clock at_risk">at risk, ${span(due - now)} left</span>`;
  return `<span class="clock">${span(due - now)} left</span>`;
}

function levelChip(level) {
  return level ? `<span class="lvl lvl-${esc(level)}">${esc(level)}</span>` : "";
}

function consentBadges(consent) {
  const inForce = new Set(consent?.scopes_in_force ?? []);
  return ["metrics", "logs", "diagnostics"]
    .map((s) => `<span class="badge ${inForce.has(s) ? "on" : "off"}" title="consent: ${s}">${s}</span>`)
    .join("");
}

function errorBox(e) {
  return `<div class="error"><b>${esc(e.code ?? "error")}</b>: ${esc(e.message)}</div>`;
}

function setNav(name) {
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name));
}

// ---- units and charts ---------------------------------------------------------------

const IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function fmtBytes(v) {
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < IEC.length - 1) { x /= 1024; i++; }
  return (v < 0 ? "-" : "") + (x >= 100 || i === 0 ? x.toFixed(0) : x.toFixed(1)) + " " + IEC[i];
}
function fmtValue(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  switch (unit) {
    case "percent": return v.toFixed(v >= 10 ? 0 : 1) + " %";
    case "bytes": return fmtBytes(v);
    case "bytes/s": return fmtBytes(v) + "/s";
    default: return Math.abs(v) >= 1000 ? v.toExponential(2) : (+v.toFixed(2)).toString();
  }
}

// Ticks at 1, 2 or 5 times a power of ten (or of 1024 for bytes).
function niceTicks(max, unit) {
  if (!(max > 0)) max = 1;
  const base = unit === "bytes" || unit === "bytes/s" ? 1024 : 10;
  let mag = 1;
  while (mag * base <= max) mag *= base;
  while (mag > max) mag /= base;
  const steps = base === 1024 ? [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] : [1, 2, 5, 10];
  let step = mag;
  for (const s of steps) { if (max / (mag * s / (base === 1024 ? 4 : 1)) <= 5) { step = mag * s / (base === 1024 ? 4 : 1); break; } }
  if (max / step > 6) step = max / 4;
  const ticks = [];
  for (let t = 0; t <= max * 1.0001 + step / 2; t += step) ticks.push(t);
  return ticks;
}

const PALETTE = ["#2563eb", "#e8590c", "#15803d", "#9333ea", "#0891b2", "#c2410c", "#4d7c0f", "#be185d"];

function timeTicks(from, to) {
  const span = to - from;
  const steps = [60e3, 300e3, 900e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3];
  const step = steps.find((s) => span / s <= 7) ?? 14 * 86400e3;
  const off = new Date().getTimezoneOffset() * 60e3;
  const out = [];
  for (let t = Math.ceil((from - off) / step) * step + off; t <= to; t += step) out.push(t);
  return { ticks: out, daily: step >= 86400e3, withDate: span > 86400e3 };
}

// An SVG line chart: series [{label, points: [[ms, v], ...]}] over [from, to].
function lineChart(title, unit, series, from, to, opts = {}) {
  const W = 640, H = 190, L = 62, R = 10, T = 8, B = 22;
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => Number.isFinite(v));
  const wrap = document.createElement("div");
  wrap.className = "chart";
  wrap.dataset.chart = title;
  const head = `<h3>${esc(title)}</h3>`;
  if (!all.length) {
    wrap.innerHTML = head + `<div class="empty">no data in this range</div>`;
    return wrap;
  }
  let max = opts.max ?? Math.max(...all);
  if (unit === "percent" && !opts.max) max = Math.max(5, Math.min(100, max * 1.1));
  const ticks = niceTicks(max * 1.02, unit);
  max = ticks[ticks.length - 1] || 1;
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}">`;
  for (const t of ticks) {
    svg += `<line x1="${L}" x2="${W - R}" y1="${y(t)}" y2="${y(t)}" stroke="#eef0f3"/>`;
    svg += `<text x="${L - 6}" y="${y(t) + 4}" text-anchor="end" font-size="10" fill="#667085">${esc(fmtValue(t, unit))}</text>`;
  }
  const tt = timeTicks(from, to);
  for (const t of tt.ticks) {
    const d = new Date(t);
    const label = tt.daily || tt.withDate && d.getHours() === 0 && d.getMinutes() === 0
      ? `${d.getMonth() + 1}-${String(d.getDate()).padStart(2, "0")}`
      : `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    svg += `<line x1="${x(t)}" x2="${x(t)}" y1="${T}" y2="${H - B}" stroke="#f3f4f6"/>`;
    svg += `<text x="${x(t)}" y="${H - 6}" text-anchor="middle" font-size="10" fill="#667085">${label}</text>`;
  }
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    // A gap longer than three steps is drawn as a gap, so an outage is visible.
    const gap = (opts.stepMs ?? 60e3) * 3;
    let d = "";
    let prev = null;
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) { prev = null; continue; }
      d += (prev === null || t - prev > gap ? "M" : "L") + x(t).toFixed(1) + "," + y(Math.min(v, max)).toFixed(1);
      prev = t;
    }
    svg += `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6" vector-effect="non-scaling-stroke"/>`;
    // A lone point (a host that just connected, or between two gaps) shows as a dot.
    s.points.forEach(([t, v], j) => {
      const before = s.points[j - 1], after = s.points[j + 1];
      const alone = (!before || t - before[0] > gap) && (!after || after[0] - t > gap);
      if (alone && Number.isFinite(v)) svg += `<circle cx="${x(t).toFixed(1)}" cy="${y(Math.min(v, max)).toFixed(1)}" r="2.5" fill="${color}"/>`;
    });
  });
  svg += `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#cfd4dc"/></svg>`;
  const legend = series
    .map((s, i) => {
      const last = [...s.points].reverse().find(([, v]) => Number.isFinite(v))?.[1] ?? null;
      return `<span><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(s.label)} <b>${esc(fmtValue(last, unit))}</b></span>`;
    })
    .join("");
  wrap.innerHTML = head + svg + `<div class="legend">${legend}</div>`;
  return wrap;
}

function label(labels, key) {
  const m = (labels || "").split(",").map((kv) => kv.split("=")).find(([k]) => k === key);
  return m ? m.slice(1).join("=") : labels || "all";
}

function byKey(series, name) {
  const m = new Map();
  for (const s of series) if (s.name === name) m.set(s.labels, s);
  return m;
}

// Two series of the same labels as a ratio in percent, point by point.
function ratio(num, den) {
  const d = new Map(den.points);
  return num.points.filter(([t]) => d.get(t) > 0).map(([t, v]) => [t, (100 * v) / d.get(t)]);
}

// ---- views --------------------------------------------------------------------------

function viewLogin(err) {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  view.replaceChildren(h(`
    <div class="panel login">
      <h1>Sign in</h1>
      <p class="muted">Paste an API token. An admin makes one with
      <code>aftercare-collector token create --name NAME --role engineer</code>.</p>
      ${err ? errorBox(err) : ""}
      <form id="login-form">
        <input id="token" type="password" autocomplete="off" placeholder="act_..." required>
        <button class="primary" type="submit">Sign in</button>
      </form>
    </div>`));
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    try {
      me = await api("GET", "/me");
      location.hash = "#/hosts";
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      viewLogin(e);
    }
  });
}

async function viewHosts() {
  setNav("hosts");
  const data = await api("GET", "/hosts?limit=500");
  const hosts = data.items;
  const order = { L1: 1, L2: 2, L3: 3, L4: 4 };
  hosts.sort((a, b) => (order[a.worst_open_level] ?? 9) - (order[b.worst_open_level] ?? 9)
    || Number(a.online) - Number(b.online) || a.name.localeCompare(b.name));
  const online = hosts.filter((x) => x.online).length;
  const count = (l) => hosts.filter((x) => x.worst_open_level === l).length;
  const rows = hosts.map((x) => `
    <tr class="clickable" data-host="${esc(x.name)}">
      <td><span class="dot ${x.online ? esc(x.worst_open_level ?? "") : "off"}"></span>${levelChip(x.worst_open_level)}</td>
      <td><a href="#/host/${hostPath(x.name)}">${esc(x.name)}</a></td>
      <td><span class="badge ${x.online ? "online" : "offline"}">${x.online ? "online" : "offline"}</span>
          <span class="muted small" title="${esc(x.last_seen ?? "")}">${esc(ago(x.last_seen))}</span></td>
      <td>${consentBadges(x.consent)}</td>
      <td>${x.open_findings ? `<a href="#/findings?host=${encodeURIComponent(x.name)}">${x.open_findings}</a>` : "0"}</td>
      <td class="small">${esc(x.os ?? "")}</td>
      <td class="small">${esc(x.agent_version)}</td>
      <td class="small">${x.dropped_batches ? `<span class="clock at_risk">${x.dropped_batches} batches</span>` : "none"}</td>
    </tr>`).join("");
  view.replaceChildren(h(`
    <h1>Hosts</h1>
    <div class="tiles">
      <div class="tile"><div class="n">${hosts.length}</div><div class="t">hosts</div></div>
      <div class="tile"><div class="n">${online}</div><div class="t">online</div></div>
      <div class="tile"><div class="n" style="color:var(--l1)">${count("L1")}</div><div class="t">with an open L1</div></div>
      <div class="tile"><div class="n" style="color:var(--l2)">${count("L2")}</div><div class="t">with an open L2</div></div>
      <div class="tile"><div class="n">${hosts.length - online}</div><div class="t">offline</div></div>
    </div>
    <div class="panel">
      <div class="row" style="margin-bottom:8px"><input id="filter" placeholder="Filter by customer or host"></div>
      <table id="hosts-table">
        <thead><tr><th>Health</th><th>Host</th><th>Seen</th><th>Consent</th><th>Open findings</th><th>OS</th><th>Agent</th><th>Spool drops</th></tr></thead>
        <tbody>${rows || `<tr><td colspan="8" class="muted">No host has connected yet.</td></tr>`}</tbody>
      </table>
    </div>`));
  document.getElementById("filter").addEventListener("input", (ev) => {
    const q = ev.target.value.toLowerCase();
    document.querySelectorAll("#hosts-table tbody tr[data-host]").forEach((tr) => {
      tr.hidden = !tr.dataset.host.toLowerCase().includes(q);
    });
  });
  document.querySelectorAll("#hosts-table tr[data-host]").forEach((tr) =>
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("a")) return;
      location.hash = "#/host/" + hostPath(tr.dataset.host);
    }));
  refreshTimer = setTimeout(route, 15000);
}

const RANGES = ["15m", "1h", "6h", "24h", "7d", "30d", "90d"];

async function viewHost(name, params) {
  setNav("hosts");
  const range = RANGES.includes(params.get("range")) ? params.get("range") : "6h";
  const hp = hostPath(name);
  // One request per family, all at once; each reads rollups for a long range.
  const families = ["cpu.usage", "mem.", "fs.bytes.", "net.rx.bytes", "net.tx.bytes"];
  const [host, logs, ...parts] = await Promise.all([
    api("GET", `/hosts/${hp}`),
    api("GET", `/hosts/${hp}/logs?severity=error&since=${range}&limit=50`).catch((e) => ({ error: e })),
    ...families.map((m) => api("GET", `/hosts/${hp}/metrics?from=${range}&metric=${encodeURIComponent(m)}`)),
  ]);
  const metrics = { ...parts[0], series: parts.flatMap((p) => p.series) };
  const facts = host.facts ?? {};
  const from = Date.parse(metrics.from), to = Date.parse(metrics.to);
  const findingRows = (host.findings ?? []).map((f) => `
    <tr class="clickable" data-finding="${f.id}"><td>${levelChip(f.level)}</td>
    <td><a href="#/finding/${f.id}">${esc(f.title)}</a></td><td>${clockCell(f.sla?.restore)}</td></tr>`).join("");
  const logRows = logs.error
    ? `<tr><td>${errorBox(logs.error)}</td></tr>`
    : (logs.items ?? []).map((l) => `<tr><td class="small muted" style="white-space:nowrap">${esc(when(l.ts))}</td>
        <td class="small">${esc(l.source)}</td><td class="log sev-${esc(l.severity)}">${esc(l.message)}</td></tr>`).join("");
  view.replaceChildren(h(`
    <div class="row" style="justify-content:space-between">
      <h1>${esc(host.name)} <span class="badge ${host.online ? "online" : "offline"}">${host.online ? "online" : "offline"}</span></h1>
      <div class="row">
        <span class="muted small">range</span>
        ${RANGES.map((r) => `<a class="badge ${r === range ? "on" : ""}" href="#/host/${hp}?range=${r}">${r}</a>`).join("")}
        <a class="badge" href="#/diagnostics?host=${encodeURIComponent(host.name)}">Run a diagnostic</a>
      </div>
    </div>
    <p class="muted small">seen ${esc(ago(host.last_seen))} · agent ${esc(host.agent_version)} · consent ${consentBadges(host.consent)}
      · data from ${esc(metrics.source === "raw" ? "raw points" : metrics.source + " rollups")}, step ${esc(span(metrics.step_ms))}</p>
    <div class="charts" id="charts"></div>
    <div class="grid2" style="margin-top:16px">
      <div class="panel"><h2>Recent errors in its logs</h2>
        <table id="host-logs"><tbody>${logRows || `<tr><td class="muted">No error lines in this range.</td></tr>`}</tbody></table></div>
      <div>
        <div class="panel"><h2>Open findings</h2>
          <table id="host-findings"><tbody>${findingRows || `<tr><td class="muted">None open.</td></tr>`}</tbody></table></div>
        <div class="panel"><h2>Facts</h2><dl class="kv">
          <dt>OS</dt><dd>${esc(facts.os_name)} ${esc(facts.os_version)}</dd>
          <dt>Kernel</dt><dd>${esc(facts.kernel)} (${esc(facts.arch)})</dd>
          <dt>CPU</dt><dd>${esc(facts.cpu_count)} × ${esc(facts.cpu_model)}</dd>
          <dt>Memory</dt><dd>${esc(fmtBytes(facts.memory_bytes ?? 0))}</dd>
          <dt>Booted</dt><dd>${facts.boot_time ? esc(when(new Date(facts.boot_time).toISOString())) : ""}</dd>
          <dt>First seen</dt><dd>${esc(when(host.first_seen))}</dd>
        </dl></div>
      </div>
    </div>`));
  const charts = document.getElementById("charts");
  const s = metrics.series;
  const step = metrics.step_ms;
  const cpu = [...byKey(s, "cpu.usage").values()].filter((x) => !x.labels);
  charts.append(lineChart("CPU busy", "percent", cpu.map((x) => ({ label: "all CPUs", points: x.points })), from, to, { max: 100, stepMs: step }));
  const used = byKey(s, "mem.used"), total = byKey(s, "mem.total");
  const mem = [...used.entries()].filter(([k]) => total.has(k)).map(([k, v]) => ({ label: "used", points: ratio(v, total.get(k)) }));
  charts.append(lineChart("Memory used", "percent", mem, from, to, { max: 100, stepMs: step }));
  const fsUsed = byKey(s, "fs.bytes.used"), fsTotal = byKey(s, "fs.bytes.total");
  const fs = [...fsUsed.entries()].filter(([k]) => fsTotal.has(k)).map(([k, v]) => ({ label: label(k, "mount"), points: ratio(v, fsTotal.get(k)) }));
  charts.append(lineChart("Filesystems used", "percent", fs, from, to, { max: 100, stepMs: step }));
  const net = [];
  for (const dir of ["rx", "tx"]) {
    for (const [k, v] of byKey(s, `net.${dir}.bytes`)) {
      if (label(k, "interface") === "lo") continue;
      net.push({ label: `${label(k, "interface")} ${dir}`, points: v.points });
    }
  }
  // Interfaces that moved nothing in the range (bonding slaves, ifb) only crowd the legend.
  const busy = net.filter((x) => x.points.some(([, v]) => v > 0));
  charts.append(lineChart("Network", "bytes/s", busy.length ? busy : net, from, to, { stepMs: step }));
  document.querySelectorAll("#host-findings tr[data-finding]").forEach((tr) =>
    tr.addEventListener("click", () => (location.hash = "#/finding/" + tr.dataset.finding)));
  refreshTimer = setTimeout(route, 60000);
}

async function viewFindings(params) {
  setNav("findings");
  const state = params.get("state") === "all" ? "all" : "open";
  const host = params.get("host");
  let q = `/findings?limit=500&state=${state}`;
  if (host) q += `&host=${encodeURIComponent(host)}`;
  const data = await api("GET", q);
  const rows = data.items.map((f) => `
    <tr class="clickable" data-finding="${f.id}">
      <td>${levelChip(f.level)}</td>
      <td><a href="#/finding/${f.id}">${esc(f.title)}</a><div class="small muted">${esc(f.category)} · ${esc(f.rule)}</div></td>
      <td><a href="#/host/${hostPath(f.customer + "/" + f.host)}">${esc(f.customer)}/${esc(f.host)}</a></td>
      <td>${esc(f.state)}${f.acknowledged ? `<div class="small muted">ack ${esc(f.acknowledged.by)}</div>` : ""}</td>
      <td>${clockCell(f.sla?.respond)}</td>
      <td>${clockCell(f.sla?.restore)}</td>
      <td class="small muted">${esc(ago(f.opened_at))}</td>
    </tr>`).join("");
  view.replaceChildren(h(`
    <div class="row" style="justify-content:space-between">
      <h1>Findings${host ? " on " + esc(host) : ""}</h1>
      <div class="row">
        <a class="badge ${state === "open" ? "on" : ""}" href="#/findings?state=open${host ? "&host=" + encodeURIComponent(host) : ""}">open</a>
        <a class="badge ${state === "all" ? "on" : ""}" href="#/findings?state=all${host ? "&host=" + encodeURIComponent(host) : ""}">all</a>
      </div>
    </div>
    <div class="panel">
      <table id="findings-table">
        <thead><tr><th>Level</th><th>Finding</th><th>Host</th><th>State</th><th>Respond by</th><th>Restore by</th><th>Opened</th></tr></thead>
        <tbody>${rows || `<tr><td colspan="7" class="muted">Nothing open: no rule flags any host.</td></tr>`}</tbody>
      </table>
    </div>`));
  document.querySelectorAll("#findings-table tr[data-finding]").forEach((tr) =>
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("a")) return;
      location.hash = "#/finding/" + tr.dataset.finding;
    }));
  refreshTimer = setTimeout(route, 30000);
}

async function viewFinding(id) {
  setNav("findings");
  const f = await api("GET", `/findings/${encodeURIComponent(id)}`);
  const hostName = f.customer + "/" + f.host;
  const timeline = (f.timeline ?? []).map((e) => `
    <li><b>${esc(e.kind)}</b> <span class="muted small">${esc(when(e.at))}${e.by ? " · " + esc(e.by) : ""}</span>
    ${e.note ? `<div>${esc(e.note)}</div>` : ""}</li>`).join("");
  const diags = (f.diagnostics ?? []).map((d) => `
    <tr><td><a href="#/diagnostic/${d.id}">#${d.id}</a></td><td>${esc(d.probe)}</td><td>${esc(d.status)}</td>
    <td class="small muted">${esc(when(d.requested_at))} · ${esc(d.requested_by)}</td></tr>`).join("");
  // Viewers read; acting is for engineers and admins (the API enforces it).
  const open = f.state !== "resolved" && me?.role !== "viewer";
  view.replaceChildren(h(`
    <h1>${levelChip(f.level)} ${esc(f.title)}</h1>
    <p class="muted">#${f.id} on <a href="#/host/${hostPath(hostName)}">${esc(hostName)}</a> · ${esc(f.category)} · rule ${esc(f.rule)}
      · contract ${esc(f.contract)} · opened ${esc(when(f.opened_at))}</p>
    <div class="grid2">
      <div>
        <div class="panel"><h2>What to do</h2><p>${esc(f.recommendation)}</p>
          <h2>Evidence</h2><pre class="out" id="evidence">${esc(JSON.stringify(f.evidence, null, 2))}</pre></div>
        <div class="panel"><h2>Timeline</h2><ul class="timeline" id="timeline">${timeline}</ul></div>
      </div>
      <div>
        <div class="panel"><h2>SLA</h2><dl class="kv">
          <dt>State</dt><dd id="finding-state">${esc(f.state)}</dd>
          <dt>Respond</dt><dd>${clockCell(f.sla?.respond)}</dd>
          <dt>Restore</dt><dd>${clockCell(f.sla?.restore)}</dd>
          ${f.acknowledged ? `<dt>Acknowledged</dt><dd>${esc(f.acknowledged.by)}, ${esc(when(f.acknowledged.at))}</dd>` : ""}
          ${f.resolved ? `<dt>Resolved</dt><dd>${esc(f.resolved.by)}, ${esc(when(f.resolved.at))}${f.resolved.note ? ": " + esc(f.resolved.note) : ""}</dd>` : ""}
        </dl>
        ${open ? `<div class="row" style="margin-top:12px">
          <button id="ack" class="primary" ${f.acknowledged ? "disabled" : ""}>Acknowledge</button>
        </div>
        <div style="margin-top:12px"><textarea id="note" rows="2" style="width:100%" placeholder="What was done (goes on the timeline)"></textarea>
          <button id="resolve">Resolve</button></div>` : ""}
        <div id="act-error"></div></div>
        <div class="panel"><h2>Diagnostics</h2>
          <table><tbody>${diags || `<tr><td class="muted">None run from this finding.</td></tr>`}</tbody></table>
          <p><a href="#/diagnostics?host=${encodeURIComponent(hostName)}&finding=${f.id}">Run a diagnostic for this finding</a></p></div>
      </div>
    </div>`));
  const act = async (what, body) => {
    try {
      await api("POST", `/findings/${f.id}/${what}`, body);
      toast(what === "ack" ? "Acknowledged" : "Resolved");
      route();
    } catch (e) {
      document.getElementById("act-error").replaceChildren(h(errorBox(e)));
    }
  };
  document.getElementById("ack")?.addEventListener("click", () => act("ack", {}));
  document.getElementById("resolve")?.addEventListener("click", () => {
    const note = document.getElementById("note").value.trim();
    act("resolve", note ? { note } : {});
  });
}

function argInput(a) {
  const name = esc(a.name);
  if (a.choices && a.choices.length) {
    return `<label>${name} <select data-arg="${name}">${a.choices.map((c) => `<option>${esc(c)}</option>`).join("")}</select></label>`;
  }
  const range = a.min !== undefined && a.min !== null ? `${a.min}..${a.max}` : a.kind ?? "";
  const hint = a.default !== null && a.default !== undefined ? `${range} (default ${a.default})` : range;
  return `<label>${name} <input data-arg="${name}" placeholder="${esc(hint)}"></label>`;
}

async function viewDiagnostics(params) {
  setNav("diagnostics");
  const hosts = (await api("GET", "/hosts?limit=500")).items;
  const chosen = params.get("host") ?? hosts[0]?.name ?? "";
  const finding = params.get("finding");
  view.replaceChildren(h(`
    <h1>Diagnostics</h1>
    <div class="panel">
      <p class="muted small">A probe runs on the customer's host only if its consent holds the
      <b>diagnostics</b> scope and the probe is in the agent's own allow-list. Both sides keep a record.</p>
      <div class="row">
        <label>Host <select id="diag-host">${hosts.map((x) => `<option ${x.name === chosen ? "selected" : ""}>${esc(x.name)}</option>`).join("")}</select></label>
        <label>Probe <select id="diag-probe"></select></label>
        <span id="diag-args" class="row"></span>
        <button id="diag-run" class="primary" ${me?.role === "viewer" ? 'disabled title="viewers read; an engineer runs probes"' : ""}>Run</button>
        ${finding ? `<span class="badge on">for finding #${esc(finding)}</span>` : ""}
      </div>
      <p id="diag-host-state" class="small muted"></p>
    </div>
    <div class="panel"><h2>Result</h2><div id="diag-result" class="muted">Choose a probe and run it.</div></div>
    <div class="panel"><h2>Earlier runs on this host</h2><table id="diag-history"><tbody></tbody></table></div>`));
  let probes = [];
  const hostSel = document.getElementById("diag-host");
  const probeSel = document.getElementById("diag-probe");
  const showArgs = () => {
    const p = probes.find((x) => x.name === probeSel.value);
    document.getElementById("diag-args").replaceChildren(h((p?.args ?? []).map(argInput).join("")));
  };
  const loadHost = async () => {
    const hp = hostPath(hostSel.value);
    try {
      const info = await api("GET", `/hosts/${hp}/probes`);
      probes = info.probes ?? [];
      const keep = probeSel.value;
      probeSel.replaceChildren(h(probes.map((p) => `<option value="${esc(p.name)}" title="${esc(p.description)}">${esc(p.name)}</option>`).join("")));
      // After a run the list is read again: the probe just run stays chosen.
      if (probes.some((p) => p.name === keep)) probeSel.value = keep;
      document.getElementById("diag-host-state").textContent =
        `${info.online ? "online" : "offline"} · diagnostics consent ${info.diagnostics_consent ? "given" : "NOT given"} · ${probes.length} probes offered`;
      showArgs();
      const hist = await api("GET", `/hosts/${hp}/diagnostics?limit=20`);
      document.querySelector("#diag-history tbody").replaceChildren(h((hist.items ?? []).map((d) => `
        <tr><td><a href="#/diagnostic/${d.id}">#${d.id}</a></td><td>${esc(d.probe)}</td><td>${esc(d.status)}</td>
        <td class="small">${esc(d.message)}</td><td class="small muted">${esc(when(d.requested_at))} · ${esc(d.requested_by)}</td></tr>`).join("")
        || `<tr><td class="muted">None yet.</td></tr>`));
    } catch (e) {
      document.getElementById("diag-host-state").replaceChildren(h(errorBox(e)));
    }
  };
  hostSel.addEventListener("change", loadHost);
  probeSel.addEventListener("change", showArgs);
  document.getElementById("diag-run").addEventListener("click", async () => {
    const args = {};
    document.querySelectorAll("#diag-args [data-arg]").forEach((el) => { if (el.value !== "") args[el.dataset.arg] = el.value; });
    const body = { probe: probeSel.value, args };
    if (finding) body.finding = Number(finding);
    const out = document.getElementById("diag-result");
    try {
      const started = await api("POST", `/hosts/${hostPath(hostSel.value)}/diagnostics`, body);
      out.replaceChildren(h(`<p>#${started.id}: <b id="diag-status">${esc(started.status)}</b></p>`));
      await showDiagnostic(started.id, out);
      loadHost();
    } catch (e) {
      out.replaceChildren(h(errorBox(e)));
    }
  });
  await loadHost();
}

// Poll one diagnostic until it ends (bounded), then show it.
async function showDiagnostic(id, into) {
  let d;
  for (let i = 0; i < 600; i++) {
    d = await api("GET", `/diagnostics/${id}`);
    if (d.status !== "pending") break;
    await new Promise((r) => setTimeout(r, 500));
  }
  into.replaceChildren(h(`
    <p>#${d.id} <b>${esc(d.probe)}</b> on ${esc(d.host)}: <b id="diag-status">${esc(d.status)}</b>
      ${d.exit_code !== null && d.exit_code !== undefined ? `· exit ${esc(d.exit_code)}` : ""}
      ${d.truncated ? `· <span class="clock at_risk">output cut</span>` : ""}
      ${d.finding ? `· for <a href="#/finding/${d.finding}">finding #${d.finding}</a>` : ""}
      <span class="muted small">· ${esc(d.requested_by)}, ${esc(when(d.requested_at))}</span></p>
    ${d.message ? `<p id="diag-message">${esc(d.message)}</p>` : ""}
    <pre class="out" id="diag-output">${esc(d.output ?? "")}</pre>`));
}

async function viewDiagnostic(id) {
  setNav("diagnostics");
  view.replaceChildren(h(`<h1>Diagnostic #${esc(id)}</h1><div class="panel" id="one"></div>`));
  await showDiagnostic(id, document.getElementById("one"));
}

// Download through fetch, so the token goes as a header and never into a URL.
async function download(path, name) {
  const resp = await fetch("/api/v1" + path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) } });
  if (!resp.ok) {
    const data = await resp.json().catch(() => ({}));
    throw new ApiError(resp.status, data.code ?? "http_" + resp.status, data.message ?? resp.statusText);
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function viewReports(params) {
  setNav("reports");
  const [reports, customers] = await Promise.all([
    api("GET", "/reports?limit=100"),
    api("GET", "/customers?limit=1000").catch(() => ({ items: [] })),
  ]);
  const rows = reports.items.map((r) => `
    <tr data-report="${r.id}">
      <td>#${r.id}</td><td>${esc(r.customer)}</td><td><b>${esc(r.period.label)}</b></td>
      <td>${esc(r.lang)}</td>
      <td class="report-status">${r.status === "running"
        ? `<progress max="100" value="${r.progress}"></progress> ${r.progress} %`
        : esc(r.status)}${r.message ? `<div class="small muted">${esc(r.message)}</div>` : ""}</td>
      <td class="small muted">${r.scheduled ? "quarterly" : esc(r.requested_by)} · ${esc(when(r.created_at))}</td>
      <td>${r.status === "done" ? ["html", "pdf", "md", "json"].map((f) =>
        `<button class="link-dark" data-download="${f}" data-id="${r.id}" data-name="aftercare-${esc(r.customer)}-${esc(r.period.label)}.${f}">${f.toUpperCase()}</button>`).join(" ") : ""}</td>
    </tr>`).join("");
  const canMake = me?.role !== "viewer";
  view.replaceChildren(h(`
    <h1>Inspection reports</h1>
    ${canMake ? `<div class="panel"><h2>Make a report</h2>
      <form id="report-form" class="row">
        <label>Customer <select id="report-customer">${customers.items.map((c) => `<option>${esc(c.name)}</option>`).join("")}</select></label>
        <label>Quarter <input id="report-quarter" placeholder="last ended, or 2026-Q3" size="14"></label>
        <span class="muted small">or</span>
        <label>From <input id="report-from" type="date"></label>
        <label>To <input id="report-to" type="date"></label>
        <label>Language <select id="report-lang"><option value="">customer's</option><option value="en">English</option><option value="zh-CN">简体中文</option></select></label>
        <button class="primary" type="submit">Make it</button>
      </form><div id="report-error"></div></div>` : ""}
    <div class="panel"><table id="reports-table">
      <thead><tr><th>#</th><th>Customer</th><th>Period</th><th>Lang</th><th>Status</th><th>Asked</th><th>Download</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="7" class="muted">No report yet: each customer's quarter is reported on the first day of the next, or make one here.</td></tr>`}</tbody>
    </table></div>`));
  document.querySelectorAll("#reports-table [data-download]").forEach((b) =>
    b.addEventListener("click", async () => {
      try {
        await download(`/reports/${b.dataset.id}/download?format=${b.dataset.download}`, b.dataset.name);
      } catch (e) {
        toast(`${e.code}: ${e.message}`);
      }
    }));
  document.getElementById("report-form")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { customer: document.getElementById("report-customer").value };
    const q = document.getElementById("report-quarter").value.trim();
    const from = document.getElementById("report-from").value, to = document.getElementById("report-to").value;
    const lang = document.getElementById("report-lang").value;
    if (q) body.quarter = q;
    if (from || to) { body.from = from; body.to = to; }
    if (lang) body.lang = lang;
    try {
      await api("POST", "/reports", body);
      toast("Report started");
      route();
    } catch (e) {
      document.getElementById("report-error").replaceChildren(h(errorBox(e)));
    }
  });
  // While one is being made, its progress is read again.
  if (reports.items.some((r) => r.status === "running")) refreshTimer = setTimeout(route, 1000);
}

async function viewAudit() {
  setNav("audit");
  const data = await api("GET", "/audit?limit=200");
  const rows = data.items.map((a) => `<tr><td class="small muted" style="white-space:nowrap">${esc(when(a.at))}</td>
    <td>${esc(a.actor)} <span class="small muted">${esc(a.role)}</span></td><td>${esc(a.action)}</td><td>${esc(a.target)}</td>
    <td>${esc(a.outcome)}</td><td class="small log">${esc(a.detail)}</td></tr>`).join("");
  view.replaceChildren(h(`<h1>Audit trail</h1><div class="panel"><table>
    <thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Outcome</th><th>Detail</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="6" class="muted">Nothing changed yet.</td></tr>`}</tbody></table></div>`));
}

// ---- routing ------------------------------------------------------------------------

async function route() {
  clearTimeout(refreshTimer);
  const hash = location.hash.replace(/^#/, "") || "/hosts";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query ?? "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (!sessionStorage.getItem(TOKEN_KEY) || parts[0] === "login") return viewLogin();
  try {
    if (!me) me = await api("GET", "/me");
    document.getElementById("nav").hidden = false;
    document.getElementById("logout").hidden = false;
    document.getElementById("who").textContent = `${me.name} (${me.role})`;
    // Only admins read the audit trail; the API says so too, this only spares a 403.
    document.querySelector('#nav [data-nav="audit"]').hidden = me.role !== "admin";
    switch (parts[0]) {
      case "host": return await viewHost(parts.slice(1).join("/"), params);
      case "findings": return await viewFindings(params);
      case "finding": return await viewFinding(parts[1]);
      case "diagnostics": return await viewDiagnostics(params);
      case "diagnostic": return await viewDiagnostic(parts[1]);
      case "audit": return await viewAudit();
      case "reports": return await viewReports(params);
      default: return await viewHosts();
    }
  } catch (e) {
    if (e.status === 401) return viewLogin(e);
    view.replaceChildren(h(errorBox(e)));
  }
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  location.hash = "#/login";
});
window.addEventListener("hashchange", route);
route();
