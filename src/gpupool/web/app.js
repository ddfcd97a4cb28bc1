// gpupool dashboard, the shell: API calls, sign-in, the page router and small DOM helpers. The pages
// are in pool.js, user.js and admin.js; charts in charts.js (uPlot, vendored). Every value from the
// API reaches the page through textContent, never as markup. The access token lives in
// sessionStorage (this tab only) and travels in a header, never in a URL.
"use strict";

const GP = (window.GP = { pages: {}, timers: [] });
const $ = (id) => document.getElementById(id);
GP.$ = $;
GP.token = sessionStorage.getItem("gpupool.token");
GP.me = null;

GP.api = async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (GP.token) headers.Authorization = "Bearer " + GP.token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401 && GP.token) { signOut(); throw new Error("session expired: sign in again"); }
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
};
GP.json = async (path, options) => (await GP.api(path, options)).json();
GP.post = (path, body) => GP.json(path, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body || {}) });

GP.tokens = (micro) => (micro === null || micro === undefined ? "–"
  : (Number(micro) / 1e6).toLocaleString(undefined, { maximumFractionDigits: 6 }));
GP.when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "–");
GP.dash = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));

// el("tag.class", {attr: value}, child, "text", …): a DOM node; strings become text nodes.
GP.el = function el(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag);
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
};

// A table: heads, then rows of cells (strings or nodes); `empty` when there are none.
GP.table = function table(heads, rows, empty, label) {
  const el = GP.el;
  const body = rows.length ? rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c === null ? "–" : c))))
    : [el("tr", {}, el("td.dim", { colspan: heads.length }, empty))];
  return el("div.scroll", { role: "region", "aria-label": label || heads.join(", "), tabindex: 0 },
    el("table", {}, el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, body)));
};

GP.card = (title, ...children) => GP.el("section.card", {}, GP.el("h2", {}, title), ...children);
GP.stat = (label, value, id) => GP.el("div.stat", {}, GP.el("b", { id, text: value }), GP.el("span", {}, label));
GP.errorBox = (e) => GP.el("p.err", { role: "alert" }, e.message || String(e));

GP.download = async function download(path, filename) {
  const blob = await (await GP.api(path)).blob();
  GP.saveBlob(blob, filename);
};
GP.saveBlob = function saveBlob(blob, filename) {
  const a = GP.el("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
};

// -- routing ------------------------------------------------------------------------------------------
GP.every = (ms, fn) => { GP.timers.push(setInterval(fn, ms)); };
GP.cleanup = [];

async function route() {
  GP.timers.forEach(clearInterval); GP.timers = [];
  GP.cleanup.forEach((fn) => fn()); GP.cleanup = [];
  const [name, arg] = (location.hash.slice(1) || "pool").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const view = $("view");
  if (!GP.token) { view.replaceChildren(); return; }
  const page = GP.pages[name] || GP.pages.pool;
  view.replaceChildren(GP.el("p.dim", {}, "loading…"));
  try { await page(view, arg); } catch (e) { view.replaceChildren(GP.errorBox(e)); }
}
GP.route = route;

// -- signing in and out --------------------------------------------------------------------------------
function showSignedIn(signedIn) {
  $("login-panel").hidden = signedIn;
  $("account").hidden = !signedIn;
  $("nav").hidden = !signedIn;
}

async function loadMe() {
  GP.me = await GP.json("/v1/me");
  $("who").textContent = GP.me.username + " (" + GP.me.role + ")";
  for (const a of document.querySelectorAll("[data-admin]")) a.hidden = GP.me.role !== "admin";
  showSignedIn(true);
}

function signOut() {
  GP.token = null; GP.me = null; sessionStorage.removeItem("gpupool.token");
  GP.cleanup.forEach((fn) => fn()); GP.cleanup = [];
  showSignedIn(false);
  $("view").replaceChildren();
  $("username").focus();
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const body = { username: $("username").value, password: $("password").value };
    GP.token = (await GP.post("/v1/auth/login", body)).access_token;
    sessionStorage.setItem("gpupool.token", GP.token);
    $("password").value = "";
    await loadMe();
    document.querySelector("nav a").focus();  // the form is gone: the keyboard lands on the pages
    await route();
  } catch (e) { $("login-error").textContent = e.message; }
});
$("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);

async function refreshHealth() {
  try {
    const health = await GP.json("/v1/health");
    $("version").textContent = "hub " + health.version + " · " + health.features.database + " · "
      + health.online_miners + " node(s) online";
  } catch (e) { $("version").textContent = "hub unreachable: " + e.message; }
}

async function start() {
  refreshHealth(); setInterval(refreshHealth, 10000);
  if (!GP.token) { showSignedIn(false); return; }
  try { await loadMe(); } catch (_) { signOut(); return; }
  await route();
}
document.addEventListener("DOMContentLoaded", start);
