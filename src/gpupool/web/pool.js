// The pool (figures with their last hour, GPUs by model, the online nodes) and one node's page (its
// GPUs' utilisation, memory, temperature and power over the last hour, trust, PoC weight).
"use strict";

(function () {
  const GP = window.GP, el = GP.el;

  function gpuSummary(n) {
    if (!n.gpus.length) return "CPU node · " + n.cpu_cores + " cores";
    return n.gpus.length + "× " + n.gpus[0].name + " (" + n.gpus[0].vram_gb + " GB)";
  }

  function avg(gpus, key) {
    const vals = gpus.map((g) => g[key]).filter((v) => v !== null && v !== undefined);
    return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null;
  }

  function bar(pct) {
    if (pct === null) return "–";
    const inner = el("i"); inner.style.width = Math.max(0, Math.min(100, pct)) + "%";
    return el("span", {}, el("span.bar", { "aria-hidden": "true" }, inner), " " + Math.round(pct) + "%");
  }

  function nodeRow(n) {
    const cpu = !n.gpus.length;
    const used = n.gpus.reduce((a, g) => a + (g.mem_used_mb || 0), 0), total = n.gpus.reduce((a, g) => a + (g.mem_total_mb || 0), 0);
    return [
      el("a", { href: "#node/" + encodeURIComponent(n.miner_id), text: n.miner_id.slice(0, 16) }),
      GP.dash(n.region), gpuSummary(n),
      cpu ? el("span.dim", {}, "no GPU") : bar(avg(n.gpus, "util_pct")),
      cpu ? el("span.dim", {}, "no GPU") : total ? (used / 1024).toFixed(1) + " / " + (total / 1024).toFixed(1) + " GiB" : "–",
      cpu ? el("span.dim", {}, "no GPU") : GP.dash(avg(n.gpus, "temp_c") === null ? null : Math.round(avg(n.gpus, "temp_c")) + " °C"),
      cpu ? el("span.dim", {}, "no GPU") : GP.dash(avg(n.gpus, "power_w") === null ? null : Math.round(n.gpus.reduce((a, g) => a + (g.power_w || 0), 0)) + " W"),
      GP.tokens(n.price_micro_per_ksec), n.queue_len + " / " + n.max_parallel, n.trust.toFixed(2),
    ];
  }

  const FIGURES = [
    ["nodes online", "", (p) => p.nodes_online],
    ["GPUs online", "", (p) => p.gpus_online],
    ["tasks settled", "per s", (p) => p.tasks_per_s],
    ["match latency", "ms", (p) => p.match_latency_ms, "no /v1/match calls"],
  ];

  GP.pages.pool = async function pool(view) {
    const [current, history] = await Promise.all([GP.json("/v1/pool"), GP.json("/v1/pool/history")]);
    const last = history.points[history.points.length - 1] || {};
    const stats = el("div.stats", {},
      GP.stat("nodes online", current.nodes_online, "stat-nodes"), GP.stat("GPUs online", current.gpus_online, "stat-gpus"),
      GP.stat("tasks settled / s", GP.dash(last.tasks_per_s), "stat-tps"),
      GP.stat("match latency", last.match_latency_ms == null ? "–" : last.match_latency_ms.toFixed(2) + " ms", "stat-match"));
    const charts = el("div.grid4");
    const models = {};
    for (const n of current.nodes) for (const g of n.gpus) models[g.name] = (models[g.name] || 0) + 1;
    const cpuNodes = current.nodes.filter((n) => !n.gpus.length).length;
    const modelRows = Object.entries(models).map(([m, c]) => [m, String(c)]);
    if (cpuNodes) modelRows.push(["CPU nodes (no GPU)", String(cpuNodes)]);
    const nodesBox = GP.card("Online nodes", GP.table(
      ["node", "region", "GPUs", "util", "memory", "temp", "power", "price / 1000 s", "queue", "trust"],
      current.nodes.map(nodeRow), "no node is online", "online nodes"));
    nodesBox.id = "nodes-card";
    view.replaceChildren(GP.card("Pool", stats, charts, el("p.dim", {}, "last hour, one point every " + history.interval_sec + " s")),
      nodesBox, GP.card("GPUs by model", GP.table(["model", "count"], modelRows, "no GPU online", "GPUs by model")));
    const plots = FIGURES.map(([label, unit, read, none]) => GP.chart(charts, label, unit, [{ label }], GP.columns(history.points, [read]), { none }));
    GP.every(5000, async () => {
      try {
        const [now, hist] = await Promise.all([GP.json("/v1/pool"), GP.json("/v1/pool/history")]);
        const tail = hist.points[hist.points.length - 1] || {};
        GP.$("stat-nodes").textContent = now.nodes_online; GP.$("stat-gpus").textContent = now.gpus_online;
        GP.$("stat-tps").textContent = GP.dash(tail.tasks_per_s);
        GP.$("stat-match").textContent = tail.match_latency_ms == null ? "–" : tail.match_latency_ms.toFixed(2) + " ms";
        FIGURES.forEach(([, , read], i) => plots[i].update(GP.columns(hist.points, [read])));
        nodesBox.replaceChild(GP.table(["node", "region", "GPUs", "util", "memory", "temp", "power", "price / 1000 s", "queue", "trust"],
          now.nodes.map(nodeRow), "no node is online", "online nodes"), nodesBox.lastChild);
      } catch (_) { /* the next tick tries again */ }
    });
  };

  const GPU_FIGURES = [
    ["GPU utilisation", "%", "util_pct", 1, [0, 100]],
    ["memory used", "GiB", "mem_used_mb", 1 / 1024, null],
    ["temperature", "°C", "temp_c", 1, null],
    ["power", "W", "power_w", 1, null],
  ];

  function gpuColumns(node) {
    return GPU_FIGURES.map(([, , key, scale]) => GP.columns(node.history, node.gpus.map((g) => (p) => {
      const r = p.gpus.find((x) => x.index === g.index);
      return r && r[key] !== null && r[key] !== undefined ? r[key] * scale : null;
    })));
  }

  GP.pages.node = async function node(view, minerId) {
    const n = await GP.json("/v1/pool/nodes/" + encodeURIComponent(minerId || ""));
    const facts = el("div.stats", {},
      GP.stat("status", n.online ? "online" : "offline"), GP.stat("region", GP.dash(n.region)),
      GP.stat("price / 1000 s", GP.tokens(n.price_micro_per_ksec)), GP.stat("queue", n.queue_len + " / " + n.max_parallel),
      GP.stat("trust", n.trust.toFixed(3)), GP.stat("PoC weight", String(n.poc_weight)),
      GP.stat("last seen", new Date(n.last_seen * 1000).toLocaleTimeString()));
    const gpus = GP.table(["#", "GPU", "VRAM"], n.gpus.map((g) => [String(g.index), g.name, g.vram_gb + " GB"]),
      "a CPU node (" + n.cpu_cores + " cores): no GPU readings", "GPUs");
    const charts = el("div.grid4");
    const mine = (await GP.json("/v1/tasks?limit=200")).filter((t) => t.miner_id === n.miner_id);
    const whose = GP.me && GP.me.role === "admin" ? "Tasks on this node" : "Your tasks on this node";
    const tasks = GP.card(whose, GP.table(["task", "status", "exit", "submitted", "cost"], mine.map((t) => [
      el("a", { href: "#tasks/" + t.task_id, text: t.task_id.slice(0, 12) }), el("span.s-" + t.status, {}, t.status),
      GP.dash(t.exit_code), GP.when(t.submitted_at), GP.tokens(t.cost)]), "none of the last 200", "tasks on this node"));
    view.replaceChildren(el("p", {}, el("a", { href: "#pool" }, "← pool")),
      GP.card("Node " + n.miner_id, facts, gpus), n.gpus.length ? GP.card("GPUs, last hour", charts) : "", tasks);
    if (!n.gpus.length) return;
    const series = n.gpus.map((g) => ({ label: "GPU " + g.index }));
    const plots = GPU_FIGURES.map(([title, unit, , , range], i) =>
      GP.chart(charts, title, unit, series, gpuColumns(n)[i], { yRange: range || undefined }));
    GP.every(5000, async () => {
      try {
        const next = await GP.json("/v1/pool/nodes/" + encodeURIComponent(minerId));
        gpuColumns(next).forEach((cols, i) => plots[i].update(cols));
      } catch (_) { /* the next tick tries again */ }
    });
  };
})();
