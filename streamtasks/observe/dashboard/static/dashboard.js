// streamtasks dashboard: the live overview (server-sent events) and the dead-letter actions.
"use strict";

function secs(v) {
  if (v === null || v === undefined) return "-";
  if (v < 120) return v.toFixed(1) + "s";
  if (v < 7200) return (v / 60).toFixed(1) + "m";
  return (v / 3600).toFixed(1) + "h";
}
function num(v, digits) {
  if (v === null || v === undefined) return "-";
  return digits === undefined ? String(v) : v.toFixed(digits);
}
function dueIn(v) {
  if (v === null || v === undefined) return "-";
  return v >= 0 ? "in " + secs(v) : secs(-v) + " overdue";
}
function rayText(ray) {
  if (!ray) return "-";
  const free = ray.available || {};
  const parts = Object.entries(ray.total || {}).filter(([k]) => k !== "memory")
    .map(([k, v]) => k + " " + +(free[k] || 0).toFixed(2) + "/" + +v.toFixed(2));
  return parts.join(" · ") || "-";
}
function cell(text, k) {
  const td = document.createElement("td");
  td.textContent = text;
  if (k) td.dataset.k = k;
  return td;
}
function spark(svg, hist) {
  const all = hist.in.concat(hist.out).filter((v) => v !== null);
  const top = Math.max(1, ...all);
  const n = hist.t.length;
  for (const [cls, ys] of [["in", hist.in], ["out", hist.out]]) {
    const pts = [];
    ys.forEach((v, i) => {
      if (v !== null) pts.push(((120 * i) / Math.max(1, n - 1)).toFixed(1) + "," + (23 - (22 * v) / top).toFixed(1));
    });
    svg.querySelector("polyline." + cls).setAttribute("points", pts.join(" "));
  }
}

// The sample's age as the server told it, growing while no new sample comes (the sampler
// failing, or Redis not answering): marked stale past the server's stale_after.
let sampleAge = null;
function showStale() {
  const marker = document.getElementById("stale");
  if (!marker || !sampleAge) return;
  const age = sampleAge.age + (Date.now() - sampleAge.at) / 1000;
  const stale = sampleAge.stale || age > Number(marker.dataset.staleAfter);
  marker.hidden = !stale;
  if (stale) marker.textContent = "STALE: this sample is " + secs(age) + " old" +
    (sampleAge.error ? " (sampling fails: " + sampleAge.error + ")" : "");
}
function showOverview(status) {
  sampleAge = { age: status.sample.age, stale: status.sample.stale, error: status.sample.error, at: Date.now() };
  showStale();
  const stamp = document.getElementById("checked-at");
  stamp.dataset.ts = status.checked_at;
  stamp.textContent = "sampled " + new Date(status.checked_at * 1000).toLocaleTimeString();
  const verdict = document.getElementById("verdict");
  verdict.textContent = status.ok ? "healthy" : "UNHEALTHY";
  verdict.className = status.ok ? "ok" : "bad";
  const problems = document.getElementById("problems");
  problems.replaceChildren(...status.problems.map((p) => { const li = document.createElement("li"); li.textContent = p; return li; }));
  document.getElementById("not-checked").replaceChildren(...(status.not_checked || []).map((n) => {
    const li = document.createElement("li"); li.textContent = "not checked: " + n; return li;
  }));
  const services = document.querySelector("#services tbody");
  services.replaceChildren(...Object.entries(status.services).map(([name, s]) => {
    const tr = document.createElement("tr");
    tr.dataset.service = name;
    const h = cell(s.health); h.className = "h-" + s.health;
    tr.append(cell(name), h, cell(s.error || s.version || s.server_version || s.note || ""));
    return tr;
  }));
  for (const s of status.streams) {
    const row = document.querySelector('#streams tr[data-stream="' + CSS.escape(s.stream) + '"]');
    if (!row) continue;
    const set = (k, text) => { row.querySelector('[data-k="' + k + '"]').textContent = text; };
    set("length", num(s.length)); set("lag", num(s.undelivered ?? s.lag)); set("pending", num(s.pending));
    set("oldest_pending_age", secs(s.oldest_pending_age));
    row.querySelector('[data-k="dead_letters"] a').textContent = num(s.dead_letters);
    set("scheduled", num(s.scheduled)); set("next_due_in", dueIn(s.next_due_in));
    set("rate_in", num(s.rate_in, 1)); set("rate_out", num(s.rate_out, 1));
    spark(row.querySelector("svg.spark"), s.history);
  }
  const periodic = document.querySelector("#periodic tbody");
  const ticks = status.streams.filter((s) => s.periodic).map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.stream = s.stream;
    const last = s.periodic.last_tick ? new Date(s.periodic.last_tick * 1000).toLocaleTimeString() : "-";
    tr.append(cell(s.stream), cell(s.periodic.schedule || "-"), cell(last, "last_tick"), cell(dueIn(s.periodic.next_tick_in), "next_tick_in"));
    return tr;
  });
  if (ticks.length) periodic.replaceChildren(...ticks);
  for (const [base, t] of Object.entries(status.levels || {})) {
    for (const lv of t.levels) {
      const row = document.querySelector('#levels tr[data-stream="' + CSS.escape(base) + '"][data-level="' + lv.level + '"]');
      if (!row) continue;
      for (const k of ["length", "lag", "pending", "dead_letters"]) row.querySelector('[data-k="' + k + '"]').textContent = num(lv[k]);
    }
  }
  const workers = document.querySelector("#workers tbody");
  const rows = status.workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.consumer = w.consumer;
    tr.className = "state-" + w.state;
    tr.append(cell(w.consumer), cell(w.state, "state"), cell(w.host || "-"), cell(w.pid || "-"),
      cell(secs(w.heartbeat_age) + " ago", "heartbeat_age"), cell(num(w.in_flight), "in_flight"),
      cell(rayText(w.ray), "ray"), cell((w.streams || []).join(", ")), cell((w.failing_loops || []).join(", ")));
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr"); tr.className = "empty";
    const td = cell("no workers"); td.colSpan = 9; tr.append(td); rows.push(tr);
  }
  workers.replaceChildren(...rows);
  showActors(status.actors || []);
}

function showActors(pools) {
  const rows = [];
  for (const pool of pools) {
    for (const g of pool.groups) {
      const tr = document.createElement("tr");
      tr.dataset.consumer = pool.consumer;
      const bounds = g.min === null ? "fixed" : g.min + "-" + g.max;
      tr.append(cell(pool.consumer), cell(g.handlers.join(", ")), cell(g.running + " / " + g.desired, "running"),
        cell(String(g.starting), "starting"), cell(bounds), cell(g.reason || "-", "reason"));
      rows.push(tr);
    }
  }
  if (!rows.length) {
    const tr = document.createElement("tr"); tr.className = "empty";
    const td = cell("no actor-mode workers"); td.colSpan = 6; tr.append(td); rows.push(tr);
  }
  document.querySelector("#actors tbody").replaceChildren(...rows);
}

function liveOverview() {
  const marker = document.getElementById("stale");
  if (marker) sampleAge = { age: Number(marker.dataset.age), stale: !marker.hidden, error: marker.dataset.error || null, at: Date.now() };
  setInterval(showStale, 1000);
  const source = new EventSource("/api/events");
  source.addEventListener("overview", (e) => showOverview(JSON.parse(e.data)));
}

// -- dead-letter actions ------------------------------------------------------------------
function csrf() { return document.querySelector('meta[name="csrf-token"]').content; }
function token() {
  const input = document.getElementById("token");
  if (input && input.value) sessionStorage.setItem("streamtasks-token", input.value);
  return sessionStorage.getItem("streamtasks-token") || "";
}
async function act(kind, body, button) {
  const actions = document.getElementById("actions");
  const result = document.getElementById("result");
  const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf() };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  // A row's button stays off once its action succeeded (the row is gone): a double-click whose
  // second click lands after a fast answer would otherwise act again and show "replayed 0".
  const rowButton = button && (button.classList.contains("replay-one") || button.classList.contains("purge-one"));
  let succeeded = false;
  if (button) button.disabled = true;
  try {
    const r = await fetch("/api/deadletters/" + encodeURIComponent(actions.dataset.stream) + "/" + kind,
      { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
    const data = await r.json();
    if (!r.ok) { result.textContent = r.status + ": " + data.error; result.className = "bad"; return; }
    result.className = "ok";
    succeeded = true;
    result.textContent = kind === "replay" ? "replayed " + data.replayed : "purged " + data.purged;
    if (body.ids) for (const id of body.ids) {
      const row = document.querySelector('tr[data-dead-id="' + id + '"]');
      if (row) row.classList.add("gone");
    }
  } catch (err) {
    result.textContent = String(err); result.className = "bad";
  } finally {
    if (button && !(succeeded && rowButton)) button.disabled = false;
  }
}
function picked() { return [...document.querySelectorAll("input.pick:checked")].map((i) => i.value); }
function matching() {
  const d = document.getElementById("actions").dataset;
  const m = {};
  for (const k of ["handler", "reason", "since", "until"]) if (d[k]) m[k] = d[k];
  return m;
}
function confirmStream() {
  const stream = document.getElementById("actions").dataset.stream;
  const typed = window.prompt("Type the stream name (" + stream + ") to confirm:");
  return typed === stream ? stream : null;
}
function wireActions() {
  const on = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", () => fn(el)); };
  document.querySelectorAll("button.replay-one").forEach((b) => b.addEventListener("click", () => act("replay", { ids: [b.dataset.id] }, b)));
  document.querySelectorAll("button.purge-one").forEach((b) => b.addEventListener("click", () => {
    if (window.confirm("Delete this dead letter for good?")) act("purge", { ids: [b.dataset.id] }, b);
  }));
  on("replay-selected", (b) => { const ids = picked(); if (ids.length) act("replay", { ids }, b); });
  on("purge-selected", (b) => {
    const ids = picked();
    if (ids.length && window.confirm("Delete " + ids.length + " dead letter(s) for good?")) act("purge", { ids }, b);
  });
  on("replay-matching", (b) => { const c = confirmStream(); if (c) act("replay", { match: matching(), confirm: c }, b); });
  on("purge-matching", (b) => { const c = confirmStream(); if (c) act("purge", { match: matching(), confirm: c }, b); });
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "overview") liveOverview();
  wireActions();
});
