// gpupool dashboard: plain JS over the hub's public API. Every value from the API goes into the page
// through textContent, never as markup. The access token lives in sessionStorage (this tab only).
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("gpupool.token");
let stream = null;

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401 && token) { signOut(); throw new Error("session expired: sign in again"); }
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

const tokens = (micro) => (Number(micro) / 1e6).toLocaleString(undefined, { maximumFractionDigits: 6 });
const when = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function bar(row, pct) {
  const td = cell(row, "");
  if (pct === null || pct === undefined) { td.textContent = "–"; return; }
  const outer = document.createElement("span"), inner = document.createElement("i");
  outer.className = "bar"; inner.style.width = Math.max(0, Math.min(100, pct)) + "%";
  outer.appendChild(inner); td.appendChild(outer); td.appendChild(document.createTextNode(" " + pct + "%"));
}

function replaceRows(tbody, rows, empty) {
  tbody.replaceChildren(...rows);
  if (!rows.length) { const tr = document.createElement("tr"); cell(tr, empty, "dim").colSpan = 6; tbody.appendChild(tr); }
}

async function refreshHealth() {
  const health = await (await api("/v1/health")).json();
  $("online").textContent = health.online_miners;
  $("node-latency").textContent = health.avg_latency_ms === null ? "–" : health.avg_latency_ms.toFixed(1) + " ms";
  $("version").textContent = "hub " + health.version + " · " + health.features.database;
  const text = await (await api("/metrics")).text();
  const sum = /^poolhub_match_latency_ms_sum (\S+)$/m.exec(text), count = /^poolhub_match_latency_ms_count (\S+)$/m.exec(text);
  $("match").textContent = count && Number(count[1]) > 0 ? (Number(sum[1]) / Number(count[1])).toFixed(2) + " ms" : "–";
}

async function refreshAccount() {
  const me = await (await api("/v1/me")).json();
  const balance = await (await api("/v1/balance")).json();
  $("who").textContent = me.username + " (" + me.role + ")";
  $("available").textContent = tokens(balance.available);
  $("held").textContent = tokens(balance.held);
}

async function refreshNodes() {
  const pool = await (await api("/v1/pool")).json();
  $("gpus").textContent = pool.gpus_online;
  replaceRows($("nodes"), pool.nodes.map((n) => {
    const tr = document.createElement("tr");
    cell(tr, n.miner_id + (n.region ? " · " + n.region : ""));
    cell(tr, n.gpus.length ? n.gpus.length + "× " + n.gpus[0].name + " (" + n.gpus[0].vram_gb + " GB)" : "CPU");
    bar(tr, n.gpus.length ? Math.round(n.gpus.reduce((a, g) => a + (g.util_pct || 0), 0) / n.gpus.length) : null);
    const used = n.gpus.reduce((a, g) => a + (g.mem_used_mb || 0), 0), total = n.gpus.reduce((a, g) => a + (g.mem_total_mb || 0), 0);
    cell(tr, total ? (used / 1024).toFixed(1) + " / " + (total / 1024).toFixed(1) + " GiB" : "–");
    cell(tr, tokens(n.price_micro_per_ksec));
    cell(tr, n.queue_len + " / " + n.max_parallel);
    return tr;
  }), "no node is online");
}

async function refreshTasks() {
  const tasks = await (await api("/v1/tasks?limit=50")).json();
  replaceRows($("tasks"), tasks.map((t) => {
    const tr = document.createElement("tr");
    tr.className = "task" + (stream && stream.id === t.task_id ? " sel" : "");
    cell(tr, t.task_id.slice(0, 12)); cell(tr, t.name); cell(tr, t.status, "s-" + t.status);
    cell(tr, t.miner_id); cell(tr, when(t.submitted_at)); cell(tr, t.cost === null ? "–" : tokens(t.cost));
    tr.addEventListener("click", () => watch(t.task_id));
    return tr;
  }), "no tasks yet: gpupool task submit DIR -- COMMAND");
}

// Server-Sent Events over fetch, so the bearer token travels in a header and not in the URL.
async function watch(taskId) {
  if (stream) stream.controller.abort();
  const controller = new AbortController();
  stream = { id: taskId, controller };
  const out = $("output");
  out.textContent = ""; out.className = "";
  $("output-task").textContent = taskId;
  try {
    const resp = await api("/v1/tasks/" + encodeURIComponent(taskId) + "/output", { signal: controller.signal });
    const reader = resp.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const name = /^event: (.*)$/m.exec(event), data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
        if (name && name[1] === "end") { out.appendChild(document.createTextNode("\n[task ended]\n")); continue; }
        if (!data.length) continue;
        let chunk = data.join("\n");
        try { chunk = JSON.parse(chunk); } catch (_) { /* plain text */ }
        if (typeof chunk !== "string") chunk = JSON.stringify(chunk);
        out.appendChild(document.createTextNode(chunk));
        out.scrollTop = out.scrollHeight;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") { out.className = "err"; out.appendChild(document.createTextNode("\n" + e.message)); }
  }
}

function signOut() {
  token = null; sessionStorage.removeItem("gpupool.token");
  if (stream) stream.controller.abort();
  $("login").hidden = false; $("me").hidden = true;
}

async function tick() {
  try { await refreshHealth(); } catch (e) { $("version").textContent = "hub unreachable: " + e.message; }
  if (!token) return;
  try { await Promise.all([refreshAccount(), refreshNodes(), refreshTasks()]); $("account-error").textContent = ""; }
  catch (e) { $("account-error").textContent = e.message; }
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const resp = await api("/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }) });
    token = (await resp.json()).access_token;
    sessionStorage.setItem("gpupool.token", token);
    $("password").value = ""; $("login").hidden = true; $("me").hidden = false;
    await tick();
  } catch (e) { $("account-error").textContent = e.message; }
});
$("logout").addEventListener("click", (ev) => { ev.preventDefault(); signOut(); });
if (token) { $("login").hidden = true; $("me").hidden = false; }
tick();
setInterval(tick, 5000);
