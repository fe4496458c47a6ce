// The PACS node dashboard: reads the API every few seconds and renders what it answers.
// Everything from the API is rendered as text (textContent, never innerHTML): a patient name may hold markup.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 25;
  const AUDIT_ROWS = 25;
  const SPARK_POINTS = 40;
  const TOKEN_KEY = "pacs.dashboard.token";

  const state = {
    paused: false,
    timer: null,
    asking: false, // the token dialog is open
    offset: 0,
    filters: {},
    studiesAsked: 0, // the latest studies request: an older answer arriving later is dropped
    lastStored: null, // {count, at}: the listeners' stored counter at the previous refresh
    rates: [],
  };

  // ---- small DOM helpers ---------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "title") node.title = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, value) {
    $(id).textContent = value === null || value === undefined ? "–" : String(value);
  }

  function fill(tbody, rows, columns, empty) {
    const body = typeof tbody === "string" ? $(tbody) : tbody;
    if (!rows.length) {
      body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: String(columns) }, empty)));
      return;
    }
    body.replaceChildren(...rows);
  }

  function message(id, text) {
    const node = $(id);
    node.hidden = !text;
    node.textContent = text || "";
  }

  // ---- formatting ------------------------------------------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
  }

  function number(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString();
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function dicomDate(text) {
    const value = String(text || "");
    return /^\d{8}$/.test(value) ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value;
  }

  function personName(text) {
    // DICOM PN: groups (alphabetic=ideographic=phonetic) of components separated by ^: "Doe^John" -> "Doe, John"
    return String(text || "").split("=")
      .map((group) => group.split("^").map((part) => part.trim()).filter((part) => part).join(", "))
      .join("=");
  }

  // ---- the API ---------------------------------------------------------------------------------------------

  class Unauthorized extends Error {}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let response;
    try {
      response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    } catch (error) {
      return { ok: false, status: 0, detail: "the API does not answer" };
    }
    if (response.status === 401) throw new Unauthorized(token() ? "The token was refused (unknown, revoked or expired)." : "");
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
      return { ok: false, status: response.status, detail };
    }
    return { ok: true, status: response.status, body };
  }

  function refusal(answer, what) {
    if (answer.status === 403) return `Your token may not read ${what}: ${answer.detail}`;
    return `Cannot read ${what}: ${answer.detail}`;
  }

  // ---- panels ----------------------------------------------------------------------------------------------

  function renderStatus(answer) {
    if (!answer.ok) {
      banner(refusal(answer, "the status"));
      return;
    }
    const status = answer.body;
    setText("node-ae", status.ae_title);
    setText("node-version", status.version);
    const scps = (status.services && status.services.scp) || [];
    const ports = [...new Set(scps.map((s) => s.port).filter((p) => p))];
    const tls = [...new Set(scps.map((s) => s.tls_port).filter((p) => p))];
    setText("node-port", ports.length ? ports.join(", ") + (tls.length ? ` (TLS ${tls.join(", ")})` : "") : "not listening");
    const queue = status.queue || {};
    setText("queue-pending", queue.pending === null ? "unknown" : number(queue.pending));
    setText("queue-dead", number(queue.dead_letter));
    $("queue-dead").classList.toggle("bad", Number(queue.dead_letter) > 0);
    const storage = status.storage || {};
    setText("storage-used", bytes(storage.bytes));
    $("storage-used").classList.toggle("bad", storage.available === false);
    const counts = status.counts || {};
    setText("count-instances", number(counts.instances));
    setText("counts-line", `${number(counts.patients)} patients · ${number(counts.studies)} studies · ` +
      `${number(counts.series)} series · ${storage.available === false ? "object store unreachable" : "object store reachable"}`);
    renderServices(status.services || {});
    renderIngest(status, scps);
  }

  function renderServices(services) {
    const rows = [];
    for (const name of Object.keys(services).sort()) {
      for (const item of services[name]) {
        const alive = Boolean(item.alive);
        rows.push(el("tr", {},
          el("td", {}, name),
          el("td", { class: "mono" }, item.instance || ""),
          el("td", {}, el("span", { class: alive ? "pill pill-ok" : "pill pill-bad" }, alive ? "alive" : "silent")),
          el("td", { title: item.last_seen || "" }, when(item.last_seen))));
      }
    }
    fill("services", rows, 4, "No service has reported a heartbeat yet.");
  }

  function renderIngest(status, scps) {
    const ingest = status.ingest || {};
    const minutes = ingest.window_minutes || 5;
    setText("ingest-window-label", `Last ${minutes} min`);
    setText("ingest-window", `${number(ingest.per_minute)} / min`);
    const stored = scps.length ? scps.reduce((sum, s) => sum + Number(s.stored || 0), 0)
      : Number((status.counts || {}).instances || 0);
    const now = Date.now();
    if (state.lastStored && stored >= state.lastStored.count && now > state.lastStored.at) {
      const rate = (stored - state.lastStored.count) / ((now - state.lastStored.at) / 1000);
      state.rates.push(rate);
      state.rates = state.rates.slice(-SPARK_POINTS);
      setText("ingest-now", `${rate.toFixed(rate >= 10 ? 0 : 1)} / s`);
    } else if (!state.lastStored) {
      setText("ingest-now", "measuring…");
    }
    state.lastStored = { count: stored, at: now };
    renderSpark();
  }

  function renderSpark() {
    const box = $("ingest-spark");
    const ns = "http://www.w3.org/2000/svg";
    const width = 400;
    const height = 60;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    const peak = Math.max(1, ...state.rates);
    const step = width / SPARK_POINTS;
    state.rates.forEach((rate, index) => {
      const bar = document.createElementNS(ns, "rect");
      const h = Math.max(1, (rate / peak) * (height - 4));
      bar.setAttribute("x", String((SPARK_POINTS - state.rates.length + index) * step + 1));
      bar.setAttribute("y", String(height - h));
      bar.setAttribute("width", String(Math.max(1, step - 2)));
      bar.setAttribute("height", String(h));
      svg.append(bar);
    });
    const highest = Math.max(0, ...state.rates);
    const label = el("span", { class: "spark-peak muted small" },
      state.rates.length ? `peak ${highest.toFixed(highest >= 10 ? 0 : 1)} / s` : "measuring…");
    box.replaceChildren(svg, label);
  }

  function auditSummary(details) {
    const parts = [];
    const d = details || {};
    if (d.instances !== undefined) parts.push(`${number(d.instances)} instance${d.instances === 1 ? "" : "s"}`);
    if (d.bytes !== undefined) parts.push(bytes(d.bytes));
    if (d.bytes_received) parts.push(`${bytes(d.bytes_received)} in`);
    if (d.bytes_sent) parts.push(`${bytes(d.bytes_sent)} out`);
    if (d.matches !== undefined) parts.push(`${number(d.matches)} matches`);
    for (const key of ["completed", "failed", "warning"]) {
      if (d[key] !== undefined && typeof d[key] !== "object") parts.push(`${key} ${d[key]}`);
    }
    if (d.operations && typeof d.operations === "object") {
      const ops = Object.entries(d.operations).map(([op, n]) => `${op} ${n}`).join(", ");
      if (ops) parts.push(ops);
    }
    if (d.duration_ms !== undefined) parts.push(`${d.duration_ms} ms`);
    if (d.called_aet) parts.push(`to ${d.called_aet}`);
    if (d.reason) parts.push(String(d.reason));
    if (d.name) parts.push(String(d.name));
    if (d.actor) parts.push(`by ${d.actor}`);
    return parts.join(" · ");
  }

  function renderAudit(answer) {
    if (!answer.ok) {
      message("transactions-message", answer.status === 403
        ? "Recent transactions need an admin token (the audit trail is admin-only)."
        : refusal(answer, "the audit trail"));
      fill("audit-rows", [], 6, "–");
      return;
    }
    message("transactions-message", "");
    const rows = (answer.body.events || []).map((event) => el("tr", { "data-action": event.action || "" },
      el("td", { class: "nowrap", title: event.occurred_at || "" }, when(event.occurred_at)),
      el("td", { class: "mono" }, event.action || ""),
      el("td", {}, el("span", { class: `pill ${outcomeClass(event.outcome)}` }, event.outcome || "")),
      el("td", { class: "mono" }, event.remote_aet || ""),
      el("td", { class: "mono" }, event.remote_ip || ""),
      el("td", {}, auditSummary(event.details))));
    fill("audit-rows", rows, 6, "No transaction yet.");
  }

  function outcomeClass(outcome) {
    if (["success", "released", "recorded", "first_kept"].includes(outcome)) return "pill-ok";
    if (["failure", "aborted", "rejected", "refused"].includes(outcome)) return "pill-bad";
    return "pill-warn";
  }

  function renderStudies(answer) {
    if (!answer.ok) {
      message("studies-message", answer.status === 422 ? `Search not understood: ${answer.detail}` : refusal(answer, "the studies"));
      fill("study-rows", [], 8, "–");
      return;
    }
    message("studies-message", "");
    const page = answer.body;
    const rows = (page.studies || []).map((study) => el("tr", { "data-study": study.study_instance_uid },
      el("td", { class: "patient", title: study.patient_name }, personName(study.patient_name)),
      el("td", { class: "mono" }, study.patient_id),
      el("td", { class: "nowrap" }, dicomDate(study.study_date)),
      el("td", {}, (study.modalities || []).join(", ")),
      el("td", { title: study.study_instance_uid }, study.study_description || study.accession_number || ""),
      el("td", { class: "num" }, `${number(study.series)} / ${number(study.instances)}`),
      el("td", { class: "mono" }, (study.sending_aets || []).join(", ")),
      el("td", { class: "nowrap", title: study.last_update || "" }, when(study.last_update))));
    fill("study-rows", rows, 8, Object.keys(state.filters).length ? "No study matches this search." : "No study held yet.");
    const total = Number(page.total || 0);
    setText("studies-total", `(${number(total)})`);
    const first = total ? page.offset + 1 : 0;
    const last = Math.min(total, page.offset + (page.studies || []).length);
    setText("studies-range", total ? `${number(first)}–${number(last)} of ${number(total)}` : "");
    $("studies-prev").disabled = page.offset <= 0;
    $("studies-next").disabled = last >= total;
  }

  function renderModalities(answer) {
    if (!answer.ok) {
      message("modalities-message", refusal(answer, "the modalities"));
      return;
    }
    message("modalities-message", "");
    const list = Array.isArray(answer.body) ? answer.body : [];
    fill("modality-rows", list.map((m) => el("tr", {},
      el("td", {}, m.name),
      el("td", { class: "mono" }, m.ae_title),
      el("td", { class: "mono" }, `${m.host}:${m.port}`),
      el("td", {}, (m.allow || []).join(", ")),
      el("td", {}, m.description || ""))), 5, "No modality registered (PUT /api/modalities/{name}).");
    const options = [...new Set(list.map((m) => m.ae_title))].sort().map((aet) => el("option", { value: aet }));
    $("aet-list").replaceChildren(...options);
  }

  // ---- search ----------------------------------------------------------------------------------------------

  function containing(text) {
    const value = text.trim();
    if (!value) return "";
    return /[*?]/.test(value) ? value : `*${value}*`;
  }

  function readFilters() {
    const form = $("study-search");
    const data = new FormData(form);
    const filters = {};
    const name = containing(String(data.get("patient_name") || ""));
    const id = containing(String(data.get("patient_id") || ""));
    const from = String(data.get("date_from") || "").replaceAll("-", "");
    const to = String(data.get("date_to") || "").replaceAll("-", "");
    const modality = String(data.get("modality") || "").trim().toUpperCase();
    const aet = String(data.get("sending_aet") || "").trim();
    if (name) filters.patient_name = name;
    if (id) filters.patient_id = id;
    if (from || to) filters.study_date = from && to && from === to ? from : `${from}-${to}`;
    if (modality) filters.modality = modality;
    if (aet) filters.sending_aet = aet;
    return filters;
  }

  function studiesPath() {
    const params = new URLSearchParams({ ...state.filters, limit: String(PAGE_SIZE), offset: String(state.offset) });
    return `/api/studies?${params}`;
  }

  async function refreshStudies() {
    const asked = ++state.studiesAsked;
    try {
      const answer = await api(studiesPath());
      if (asked === state.studiesAsked) renderStudies(answer);
    } catch (error) {
      if (error instanceof Unauthorized) askToken(error.message);
      else throw error;
    }
  }

  // ---- refresh loop ----------------------------------------------------------------------------------------

  function banner(text) {
    const node = $("banner");
    node.hidden = !text;
    node.textContent = text || "";
  }

  function connection(text, kind) {
    const node = $("connection");
    node.textContent = text;
    node.className = `pill ${kind}`;
  }

  async function refresh() {
    clearTimeout(state.timer);
    if (state.asking) return;
    const asked = ++state.studiesAsked;
    try {
      const [status, audit, studies, modalities] = await Promise.all([
        api("/api/status"),
        api(`/api/audit?limit=${AUDIT_ROWS}`),
        api(studiesPath()),
        api("/api/modalities"),
      ]);
      renderStatus(status);
      renderAudit(audit);
      if (asked === state.studiesAsked) renderStudies(studies);
      renderModalities(modalities);
      if (status.status === 0) {
        connection("offline", "pill-bad");
        banner("The API does not answer; retrying.");
      } else {
        connection(state.paused ? "paused" : "live", state.paused ? "pill-muted" : "pill-ok");
        if (status.ok) banner("");
        setText("node-updated", new Date().toLocaleTimeString());
      }
    } catch (error) {
      if (error instanceof Unauthorized) {
        askToken(error.message);
        return;
      }
      banner(`Dashboard error: ${error && error.message ? error.message : error}`);
    }
    schedule();
  }

  function schedule() {
    clearTimeout(state.timer);
    if (!state.paused && !state.asking) state.timer = setTimeout(refresh, REFRESH_MS);
  }

  // ---- the token dialog ------------------------------------------------------------------------------------

  function askToken(problem) {
    state.asking = true;
    clearTimeout(state.timer);
    connection("token needed", "pill-warn");
    const error = $("token-error");
    error.hidden = !problem;
    error.textContent = problem || "";
    $("token-dialog").hidden = false;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function closeDialog() {
    state.asking = false;
    $("token-dialog").hidden = true;
  }

  function wire() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      closeDialog();
      refresh();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      closeDialog();
      refresh();
    });
    $("token-cancel").addEventListener("click", () => {
      closeDialog();
      connection("token needed", "pill-warn");
    });
    $("token-button").addEventListener("click", () => askToken(""));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("token-dialog").hidden) $("token-cancel").click();
    });
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "Resume" : "Pause";
      if (state.paused) {
        clearTimeout(state.timer);
        connection("paused", "pill-muted");
      } else {
        refresh();
      }
    });
    $("study-search").addEventListener("submit", (event) => {
      event.preventDefault();
      state.filters = readFilters();
      state.offset = 0;
      refreshStudies();
    });
    $("study-search").addEventListener("reset", () => {
      state.filters = {};
      state.offset = 0;
      setTimeout(refreshStudies, 0);
    });
    $("studies-prev").addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - PAGE_SIZE);
      refreshStudies();
    });
    $("studies-next").addEventListener("click", () => {
      state.offset += PAGE_SIZE;
      refreshStudies();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    refresh();
  });
})();
