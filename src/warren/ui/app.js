// Warren's web view: every rollout, live. Plain JavaScript, no library, no build step.
//
// It reads the API with the admin token, kept in this tab's session storage, sent as
// `Authorization: Bearer` to this server only. It follows GET /v1/events/stream with fetch() —
// EventSource cannot send that header — and re-reads the service an event is about. The page
// builds every element with the DOM (never innerHTML): names and messages are shown as text.

const TOKEN_KEY = "warren.token";
const REFRESH_DEBOUNCE_MS = 200; // events come in bursts (a step is a few): one read for them
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
const STREAM_SILENCE_MS = 45000; // the server pings every 15 s: three missed, the link is dead
const ACTIVE = new Set(["progressing", "paused", "awaiting_promotion"]);
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

const state = {
  token: "",
  view: { kind: "none", name: "" },
  live: false,
  lastEventId: "",
  stream: null, // the AbortController of the open event stream
  pending: new Set(), // services an event was about, not yet read again
  pendingAll: false,
  timer: 0,
  loading: null, // the load in flight, and whether another must follow it
  again: false,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ── DOM helpers ─────────────────────────────────────────────────────────────────────────────

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fill(id, ...children) {
  $(id).replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function show(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

const pad = (n) => String(n).padStart(2, "0");

function clock(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function datetime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(t)}`;
}

function duration(seconds) {
  if (seconds === undefined || seconds === null) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
}

const percent = (x) => (x === undefined || x === null ? "" : `${(x * 100).toFixed(2)}%`);
const millis = (x) => (x === undefined || x === null ? "" : `${Math.round(x * 1000)} ms`);

function phaseBadge(phase) {
  const name = phase || "none";
  const text = phase ? phase.replaceAll("_", " ") : "no rollout";
  return h("span", { class: `phase phase-${name}`, "data-phase": name, text });
}

// ── the API ─────────────────────────────────────────────────────────────────────────────────

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const e = data && data.error;
    const message = e && e.message ? e.message : `HTTP ${response.status}`;
    const error = new ApiError(response.status, e ? e.code : "http", message);
    if (response.status === 401) refuse(error);
    throw error;
  }
  return data;
}

const enc = encodeURIComponent;

// ── the token ───────────────────────────────────────────────────────────────────────────────

/** `#token=…` in the address: kept, then taken out of the address bar and the history. */
function takeTokenFromFragment() {
  const match = /^#(.*&)?token=([^&]*)(&.*)?$/.exec(location.hash);
  if (!match) return;
  const token = decodeURIComponent(match[2]).trim();
  const rest = `${match[1] || ""}${(match[3] || "").slice(1)}`.replace(/&$/, "");
  history.replaceState(null, "", `${location.pathname}${location.search}#${rest || "/"}`);
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
}

function refuse(error) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  stopFollowing();
  showLogin(
    `The server refused this token (${error.message}). ` +
      "Enter the admin token: admin.token in the server's data dir.",
  );
}

function showLogin(message) {
  showSection("login");
  show("login-error", message);
  $("sign-out").hidden = true;
  setLive(false, "not connected");
  $("token").value = "";
  $("token").focus();
}

async function signIn(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api("GET", "/v1/info");
  } catch (err) {
    if (err.status !== 401) showLogin(`Could not check the token: ${err.message}.`);
    return;
  }
  $("sign-out").hidden = false;
  follow();
  route();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  stopFollowing();
  showLogin("");
}

// ── views ───────────────────────────────────────────────────────────────────────────────────

function showSection(id) {
  for (const section of ["login", "services", "rollout"]) $(section).hidden = section !== id;
}

function route() {
  if (!state.token) {
    showLogin("");
    return;
  }
  const match = /^#\/services\/([^/]+)$/.exec(location.hash);
  state.view = match ? { kind: "rollout", name: decodeURIComponent(match[1]) } : { kind: "services", name: "" };
  showSection(state.view.kind === "rollout" ? "rollout" : "services");
  if (state.view.kind === "rollout") {
    $("rollout-title").textContent = state.view.name;
    $("action-result").textContent = "";
    $("action-result").className = "";
    document.title = `${state.view.name} — Warren`;
  } else {
    document.title = "Warren — rollouts";
  }
  $("main").focus();
  reload();
}

/** Read the current view again; one load at a time (a later one follows the one in flight, so
 * the last answer shown is the newest). */
function reload() {
  if (state.loading) {
    state.again = true;
    return;
  }
  const view = state.view;
  const load = view.kind === "rollout" ? loadRollout(view.name) : loadServices();
  state.loading = load
    .catch((err) => {
      if (err.status === 401) return;
      show(view.kind === "rollout" ? "rollout-error" : "services-error", `Could not read the cluster: ${err.message}`);
    })
    .finally(() => {
      state.loading = null;
      if (state.again) {
        state.again = false;
        reload();
      }
    });
}

// ── services ────────────────────────────────────────────────────────────────────────────────

async function loadServices() {
  const services = await api("GET", "/v1/services");
  const statuses = await Promise.all(
    services.map((s) => api("GET", `/v1/services/${enc(s.name)}/deployment`).catch(() => null)),
  );
  if (state.view.kind !== "services") return;
  show("services-error", "");
  fill("services-rows", services.map((s, i) => serviceRow(s, statuses[i])));
  $("services-empty").hidden = services.length > 0;
}

function serviceRow(service, status) {
  const href = `#/services/${enc(service.name)}`;
  const row = h(
    "tr",
    { "data-service": service.name },
    h("th", { scope: "row" }, h("a", { href, text: service.name })),
    h("td", { class: "num", text: String(service.revision) }),
    h("td", { class: "num", text: `${service.ready} / ${service.replicas}` }),
    h("td", { text: service.strategy }),
    h("td", {}, status && status.phase ? phaseBadge(status.phase) : "—"),
    h("td", {}, status && status.phase ? progress(status) : ""),
  );
  row.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    location.hash = href;
  });
  return row;
}

/** How far a rollout has come: the new revision's traffic share, or its slots updated. */
function progress(status) {
  const done = status.phase === "succeeded";
  if (status.movesBy === "step") {
    const share = done ? 100 : (status.weights || {})[String(status.toRevision)] || 0;
    return [
      h("progress", { max: 100, value: share, "aria-label": `traffic to revision ${status.toRevision}` }),
      `${share}% to revision ${status.toRevision}, step ${status.step}`,
    ];
  }
  const total = status.desiredTasks || 0;
  const updated = done ? total : Math.min(status.updatedSlots || 0, total);
  return [
    h("progress", { max: Math.max(total, 1), value: updated, "aria-label": "tasks updated" }),
    `${updated} of ${total} updated`,
  ];
}

// ── a service's rollout ─────────────────────────────────────────────────────────────────────

async function loadRollout(name) {
  const path = `/v1/services/${enc(name)}`;
  const [service, status, deployments, tasks, jobs] = await Promise.all([
    api("GET", path),
    api("GET", `${path}/deployment`),
    api("GET", `${path}/deployments`),
    api("GET", `${path}/tasks`),
    api("GET", `${path}/jobs`),
  ]);
  if (state.view.kind !== "rollout" || state.view.name !== name) return;
  const record = deployments.find((d) => d.id === status.deploymentId) || null;
  const rollback = deployments.find((d) => d.id === status.rollbackId) || null;
  show("rollout-error", "");
  renderFacts(service, status);
  renderButtons(status);
  renderSteps(service, status, record);
  renderWeights(status, tasks);
  renderAnalysis(record, status);
  renderDecisions([...(record ? record.decisions : []), ...(rollback ? rollback.decisions : [])]);
  renderTasks(tasks);
  renderJobs(jobs);
  renderHistory(deployments);
}

function renderFacts(service, status) {
  const facts = [
    ["Revision", `${service.revision} (${status.version})`],
    ["Strategy", status.strategy],
    ["Phase", phaseBadge(status.phase)],
  ];
  if (status.deploymentId) {
    const revisions = status.fromRevision ? `${status.fromRevision} → ${status.toRevision}` : `${status.toRevision}`;
    facts.push(["Deployment", `${status.deploymentId} (${status.kind}, revision ${revisions})`]);
    if (status.movesBy === "step") facts.push(["Steps taken", String(status.step)]);
    else facts.push(["Batch", `${status.step} of ${status.batches}`]);
    facts.push(["Started", `${datetime(status.startedAt)} (${duration(status.elapsed)}${status.finishedAt ? "" : " so far"})`]);
  }
  facts.push(["Tasks ready", `${status.readyTasks} / ${status.desiredTasks} of revision ${status.revision}`]);
  if (status.rollbackId) {
    facts.push(["Rollback", [phaseBadge(status.rollbackPhase), ` ${status.rollbackId}, to revision ${status.rolledBackTo}`]]);
  }
  if (status.message) facts.push(["Message", status.message]);
  fill(
    "rollout-facts",
    // Two facts a row; the message, which may be long, a row of its own.
    facts.flatMap(([term, value]) => {
      const wide = term === "Message" ? "wide" : "";
      return [h("dt", { class: wide, text: term }), h("dd", { class: wide }, value)];
    }),
  );
}

function renderButtons(status) {
  const active = ACTIVE.has(status.phase);
  const allowed = {
    promote: active,
    pause: status.phase === "progressing" || status.phase === "awaiting_promotion",
    resume: status.phase === "paused",
    abort: active,
    rollback: true,
  };
  for (const button of document.querySelectorAll("[data-action]")) {
    button.disabled = !allowed[button.dataset.action];
  }
}

function describeStep(step) {
  if (step.setWeight !== undefined && step.setWeight !== null) return `set weight ${step.setWeight}%`;
  if (step.setHeaderRoute) {
    const match = (step.setHeaderRoute.match || []).map((m) => m.headerName || m.cookieName || "?").join(", ");
    return `header route ${step.setHeaderRoute.name} (${match})`;
  }
  if (step.pause !== undefined) {
    return typeof step.pause === "object" ? "pause until promoted" : `pause ${step.pause}`;
  }
  return JSON.stringify(step);
}

function renderSteps(service, status, record) {
  const items = [];
  const deploy = (service.spec || {}).deploy || {};
  const canary = record && record.kind === "update" && record.strategy === "canary";
  if (canary && deploy.canary && (deploy.canary.steps || []).length) {
    const current = record.promoting ? deploy.canary.steps.length : record.canaryStep;
    const over = !ACTIVE.has(record.phase);
    deploy.canary.steps.forEach((step, i) => {
      items.push(stepItem(describeStep(step), i < current || record.phase === "succeeded", i === current && !over));
    });
    const finished = record.phase === "succeeded";
    items.push(stepItem(`promotion: revision ${record.toRevision} on every slot`, finished, record.promoting && !over));
  } else if (record) {
    // Any other strategy: the steps as its decision log tells them, the last word of each.
    const byStep = new Map();
    for (const d of record.decisions) byStep.set(d.step, d);
    for (const [step, d] of byStep) {
      const current = step === record.step && ACTIVE.has(record.phase);
      items.push(stepItem(`step ${step}: ${d.message}`, step < record.step || record.phase === "succeeded", current));
    }
  }
  if (!items.length) items.push(h("li", { text: "No rollout yet." }));
  fill("steps", items);
  if (canary && !(deploy.canary && (deploy.canary.steps || []).length)) {
    $("steps").append(h("li", { text: "default steps: 10% → 50% → 100%, each held one analysis window" }));
  }
}

function stepItem(text, done, current) {
  return h("li", { class: done && !current ? "done" : "", "aria-current": current ? "step" : false, text });
}

function renderWeights(status, tasks) {
  const weights = Object.entries(status.weights || {}).map(([rev, w]) => [Number(rev), w]);
  const rows = [];
  if (weights.length) {
    for (const [rev, w] of weights.sort((a, b) => a[0] - b[0])) rows.push(weightBar(rev, w, status));
  } else {
    // No weights: the ingress shares traffic among the ready tasks.
    const ready = tasks.filter((t) => t.ready && t.desiredState === "running");
    const counts = new Map();
    for (const t of ready) counts.set(t.revision, (counts.get(t.revision) || 0) + 1);
    rows.push(h("p", { class: "note", text: "No weights set: traffic is shared among the ready tasks." }));
    for (const [rev, n] of [...counts].sort((a, b) => a[0] - b[0])) {
      rows.push(weightBar(rev, Math.round((100 * n) / ready.length), status, `${n} ready`));
    }
  }
  rows.push(experimentTable(status.experiment));
  fill("weights", rows);
}

function weightBar(revision, share, status, extra) {
  const role = revision === status.toRevision && status.fromRevision ? " (new)" : revision === status.fromRevision ? " (stable)" : "";
  const label = `revision ${revision}${role}`;
  const fillBar = h("span");
  fillBar.style.width = `${share}%`; // through the CSSOM: a style attribute would break the CSP
  const isNew = revision === status.toRevision && ACTIVE.has(status.phase);
  return h(
    "div",
    { class: "bar-row", "data-revision": revision },
    h("span", { text: extra ? `${label}, ${extra}` : label }),
    h("div", { class: isNew ? "bar new" : "bar", role: "img", "aria-label": `${label}: ${share}%` }, fillBar),
    h("span", { class: "pct", text: `${share}%` }),
  );
}

function experimentTable(experiment) {
  if (!experiment || !experiment.a || !experiment.b) return null;
  const row = (key) => {
    const x = experiment[key];
    return h(
      "tr",
      {},
      h("th", { scope: "row", text: `${key.toUpperCase()}: revision ${x.revision}` }),
      h("td", { class: "num", text: String(x.requests) }),
      h("td", { class: "num", text: percent(x.successRate) }),
      h("td", { class: "num", text: millis(x.p50) }),
      h("td", { class: "num", text: millis(x.p95) }),
    );
  };
  const winner = experiment.winner ? `revision ${experiment.winner} (confidence ${percent(experiment.confidence)})` : "none yet";
  return [
    h("h3", { text: "A/B test" }),
    h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, ...["", "Requests", "Success rate", "p50", "p95"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, row("a"), row("b")),
    ),
    h("p", { class: "note", text: `Winner: ${winner}${experiment.endsAt ? `; the test ends at ${clock(experiment.endsAt)}` : ""}` }),
  ];
}

// ── analysis windows ────────────────────────────────────────────────────────────────────────

const ANALYSIS_SERIES = [
  { key: "successRate", label: "success rate", axis: "rate", cls: "rate" },
  { key: "p95", label: "p95 latency", axis: "latency", cls: "p95" },
  { key: "p99", label: "p99 latency", axis: "latency", cls: "p99" },
];

function analysisWindows(record) {
  if (!record) return [];
  return record.decisions.filter(
    (d) => d.reason.startsWith("Analysis") && d.measured && Object.keys(d.measured).length,
  );
}

function renderAnalysis(record, status) {
  const windows = analysisWindows(record);
  if (!windows.length) {
    const why = status.experiment && status.experiment.a ? "The A/B test's figures are under Traffic." : "No analysis window has ended in this rollout (or it has no analysis).";
    fill("analysis", h("p", { class: "note", text: why }));
    return;
  }
  const points = windows.map((d) => ({ time: d.time, values: d.measured }));
  fill(
    "analysis",
    h(
      "div",
      { class: "columns" },
      h(
        "div",
        {},
        chart(points, ANALYSIS_SERIES),
        h("div", { class: "legend" }, ANALYSIS_SERIES.map((s) => h("span", { class: `key ${s.cls}`, text: s.label }))),
      ),
      h("div", { class: "scroll" }, windowTable(windows)),
    ),
  );
}

/** A line chart of `points` (each `{time, values}`): rates on the left axis, latencies (seconds,
 * shown in ms) on the right; drawn as SVG elements, with its figures in words for a reader. */
function chart(points, series) {
  const W = 800, H = 220, left = 56, right = 64, top = 14, bottom = 28;
  const times = points.map((p) => p.time);
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const x = (t) => (t1 === t0 ? (left + W - right) / 2 : left + ((t - t0) / (t1 - t0)) * (W - left - right));
  const rates = points.flatMap((p) => series.filter((s) => s.axis === "rate").map((s) => p.values[s.key])).filter(Number.isFinite);
  const lats = points.flatMap((p) => series.filter((s) => s.axis === "latency").map((s) => p.values[s.key])).filter(Number.isFinite);
  // Success rates sit near 100%: the axis starts at 90% unless a window fell lower.
  const rateLow = Math.min(0.9, ...rates.map((r) => Math.floor(r * 20) / 20));
  const latHigh = Math.max(0.001, ...lats) * 1.15;
  const yRate = (r) => top + (1 - (r - rateLow) / (1 - rateLow || 1)) * (H - top - bottom);
  const yLat = (s) => top + (1 - s / latHigh) * (H - top - bottom);
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const y = top + (i / 4) * (H - top - bottom);
    parts.push(svg("line", { class: "grid-line", x1: left, x2: W - right, y1: y, y2: y }));
    parts.push(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, `${((1 - i / 4) * (1 - rateLow) * 100 + rateLow * 100).toFixed(1)}%`));
    const ms = (1 - i / 4) * latHigh * 1000;
    parts.push(svg("text", { x: W - right + 6, y: y + 4 }, `${latHigh < 0.01 ? ms.toFixed(1) : Math.round(ms)} ms`));
  }
  parts.push(svg("text", { x: left, y: H - 8 }, clock(t0)));
  if (t1 !== t0) parts.push(svg("text", { x: W - right, y: H - 8, "text-anchor": "end" }, clock(t1)));
  for (const s of series) {
    const y = s.axis === "rate" ? yRate : yLat;
    const pts = points.filter((p) => Number.isFinite(p.values[s.key])).map((p) => [x(p.time), y(p.values[s.key])]);
    if (pts.length > 1) parts.push(svg("polyline", { class: s.cls, points: pts.map((p) => p.join(",")).join(" ") }));
    for (const [px, py] of pts) parts.push(svg("circle", { class: `dot-${s.cls}`, cx: px, cy: py, r: 3.5 }));
  }
  const last = points[points.length - 1].values;
  const label = `${points.length} analysis window(s); the last: success rate ${percent(last.successRate)}` + (Number.isFinite(last.p95) ? `, p95 ${millis(last.p95)}` : "");
  return svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label }, svg("title", {}, label), parts);
}

function windowTable(windows) {
  return h(
    "table",
    { class: "grid" },
    h("thead", {}, h("tr", {}, ...["Time", "Step", "Verdict", "Requests", "Success rate", "p95", "p99"].map((t) => h("th", { scope: "col", text: t })))),
    h(
      "tbody",
      {},
      windows
        .slice()
        .reverse()
        .map((d) =>
          h(
            "tr",
            {},
            h("td", { text: clock(d.time) }),
            h("td", { class: "num", text: String(d.step) }),
            h("td", { text: d.reason.replace(/^Analysis/, "") }),
            h("td", { class: "num", text: String(d.measured.requests ?? "") }),
            h("td", { class: "num", text: percent(d.measured.successRate) }),
            h("td", { class: "num", text: millis(d.measured.p95) }),
            h("td", { class: "num", text: millis(d.measured.p99) }),
          ),
        ),
    ),
  );
}

// ── log, tasks, jobs, history ───────────────────────────────────────────────────────────────

function renderDecisions(decisions) {
  const rows = decisions
    .slice()
    .sort((a, b) => b.time - a.time) // the newest first: the one that matters now
    .map((d) =>
      h(
        "tr",
        { "data-reason": d.reason },
        h("td", { text: clock(d.time), title: datetime(d.time) }),
        h("td", { class: "num", text: String(d.step) }),
        h("td", { text: d.reason }),
        h("td", { text: d.message }),
      ),
    );
  fill("decisions", rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, text: "No decision yet." }))]);
}

function renderTasks(tasks) {
  const order = (t) => [t.desiredState === "running" ? 0 : 1, t.slot, t.revision];
  const sorted = tasks.slice().sort((a, b) => {
    const [x, y] = [order(a), order(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  const rows = sorted.map((t) =>
    h(
      "tr",
      { "data-task": t.id },
      h("td", { class: "mono", text: t.id }),
      h("td", { class: "num", text: String(t.revision) }),
      h("td", { text: t.node || "—" }),
      h("td", { text: t.desiredState === t.state ? t.state : `${t.state} (→ ${t.desiredState})` }),
      h("td", { text: t.ready ? "yes" : "no" }),
    ),
  );
  fill("tasks", rows.length ? rows : [h("tr", {}, h("td", { colspan: 5, text: "No task." }))]);
}

function renderJobs(jobs) {
  $("jobs-section").hidden = !jobs.length;
  fill(
    "jobs",
    jobs
      .slice()
      .reverse()
      .map((t) =>
        h(
          "tr",
          {},
          h("td", { class: "mono", text: t.id }),
          h("td", { class: "num", text: String(t.revision) }),
          h("td", { text: t.job }),
          h("td", { text: t.state }),
          h("td", { class: "num", text: t.exitCode === undefined || t.exitCode === null ? "" : String(t.exitCode) }),
        ),
      ),
  );
}

function renderHistory(deployments) {
  fill(
    "history",
    deployments
      .slice()
      .reverse()
      .map((d) =>
        h(
          "tr",
          {},
          h("td", { class: "mono", text: d.id }),
          h("td", { text: d.kind }),
          h("td", { text: d.fromRevision ? `${d.fromRevision} → ${d.toRevision}` : String(d.toRevision) }),
          h("td", {}, phaseBadge(d.phase)),
          h("td", { text: datetime(d.startedAt) }),
        ),
      ),
  );
}

// ── actions ─────────────────────────────────────────────────────────────────────────────────

const QUESTIONS = {
  promote: (n) => `Promote ${n}'s rollout? A canary skips its current pause; blue/green switches now.`,
  pause: (n) => `Pause ${n}'s rollout? No new batch or step until it is resumed.`,
  resume: (n) => `Resume ${n}'s rollout?`,
  abort: (n) => `Abort ${n}'s rollout? It goes back to the revision it started from.`,
  rollback: (n) => `Roll ${n} back to its previous revision?`,
};

async function act(action) {
  const name = state.view.name;
  if (!window.confirm(QUESTIONS[action](name))) return;
  const path = action === "rollback" ? `/v1/services/${enc(name)}/rollback` : `/v1/services/${enc(name)}/deployment/${action}`;
  const result = $("action-result");
  result.className = "";
  result.textContent = `${action}: asked…`;
  try {
    const answer = await api("POST", path, action === "rollback" ? {} : undefined);
    result.className = "ok";
    result.textContent =
      action === "rollback"
        ? `rollback: deployment ${answer.deployment} started, to revision ${answer.revision}`
        : `${action}: deployment ${answer.id} is ${answer.phase.replaceAll("_", " ")}${answer.message ? ` — ${answer.message}` : ""}`;
  } catch (err) {
    if (err.status === 401) return;
    result.className = "alert";
    result.textContent = `${action} refused: ${err.message}`;
  }
  // The event stream brings what follows; without it, read the rollout again now.
  if (!state.live) reload();
}

// ── the event stream ────────────────────────────────────────────────────────────────────────

function setLive(on, text) {
  state.live = on;
  const el = $("live");
  el.className = on ? "live on" : "live off";
  el.textContent = text;
}

function stopFollowing() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

/** Follow the event stream until signed out: on each event, read its service again; on a lost
 * connection, reconnect with back-off and `Last-Event-ID` (and read the view again). */
async function follow() {
  stopFollowing();
  const control = new AbortController();
  state.stream = control;
  let backoff = BACKOFF_FIRST_MS;
  let first = true;
  while (!control.signal.aborted) {
    let silence = 0;
    const wake = () => {
      clearTimeout(silence);
      silence = setTimeout(() => attempt.abort(), STREAM_SILENCE_MS);
    };
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    control.signal.addEventListener("abort", stop);
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/v1/events/stream", { headers, signal: attempt.signal, cache: "no-store" });
      if (response.status === 401) {
        refuse(new ApiError(401, "unauthorized", "invalid token"));
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setLive(true, "live");
      backoff = BACKOFF_FIRST_MS;
      if (!first) scheduleRefresh(null); // what happened while away, beyond the kept events too
      first = false;
      wake();
      await readFrames(response.body, onFrame, wake);
    } catch {
      // a lost connection, a dead one (silence), or signed out: below
    } finally {
      clearTimeout(silence);
      control.signal.removeEventListener("abort", stop);
    }
    if (control.signal.aborted) return;
    setLive(false, `reconnecting in ${Math.round(backoff / 1000)}s…`);
    await new Promise((resolve) => setTimeout(resolve, backoff * (0.8 + Math.random() * 0.4)));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

/** Server-sent events from a byte stream: frames end with a blank line; `data:` lines join;
 * a line starting with `:` is a comment (the server's ping). */
async function readFrames(body, onFrameRead, onBytes) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buffer += decoder.decode(value, { stream: true });
    // CRLF and CR end lines too; a CR last in a chunk may be half of a CRLF: wait for the next.
    const held = buffer.endsWith("\r") ? "\r" : "";
    buffer = buffer.slice(0, buffer.length - held.length).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = parseFrame(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (frame) onFrameRead(frame);
    }
    buffer += held;
  }
}

function parseFrame(block) {
  const frame = { id: null, event: "message", data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") frame.data.push(value);
    else if (field === "event") frame.event = value;
    else if (field === "id") frame.id = value;
  }
  if (frame.id === null && !frame.data.length) return null;
  return { id: frame.id, event: frame.event, data: frame.data.join("\n") };
}

function onFrame(frame) {
  if (frame.id) state.lastEventId = frame.id;
  let event = null;
  try {
    event = JSON.parse(frame.data);
  } catch {
    return;
  }
  scheduleRefresh(event && event.service ? event.service : null);
}

/** Read again what `service` (null: anything) shows, once per burst of events. */
function scheduleRefresh(service) {
  if (service === null) state.pendingAll = true;
  else state.pending.add(service);
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    const about = state.pending;
    const all = state.pendingAll;
    state.pending = new Set();
    state.pendingAll = false;
    const view = state.view;
    if (view.kind === "services" || (view.kind === "rollout" && (all || about.has(view.name)))) reload();
  }, REFRESH_DEBOUNCE_MS);
}

// ── start ───────────────────────────────────────────────────────────────────────────────────

function start() {
  takeTokenFromFragment();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", signOut);
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  window.addEventListener("hashchange", () => {
    if (state.token) route();
  });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showLogin("");
}

start();
