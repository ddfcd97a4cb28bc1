// A user's page: balance and its history, submitting a task (command, files, requirements, price cap),
// the task list with why a queued task waits, and one task's live output, stop and artifacts.
"use strict";

(function () {
  const GP = window.GP, el = GP.el;
  let stream = null;

  // A ustar archive of the chosen files (the hub's bundle; nodes open it whatever its compression).
  async function tarOf(files) {
    const enc = new TextEncoder(), parts = [];
    for (const f of files) {
      const name = (f.webkitRelativePath || f.name).split("/").slice(f.webkitRelativePath ? 1 : 0).join("/");
      const head = new Uint8Array(512), put = (text, at, len) => head.set(enc.encode(text).slice(0, len), at);
      const octal = (n, len) => n.toString(8).padStart(len - 1, "0") + "\0";
      put(name, 0, 100); put(octal(0o644, 8), 100, 8); put(octal(0, 8), 108, 8); put(octal(0, 8), 116, 8);
      put(octal(f.size, 12), 124, 12); put(octal(Math.floor(Date.now() / 1000), 12), 136, 12);
      put("        ", 148, 8); put("0", 156, 1); put("ustar\0" + "00", 257, 8);
      const sum = head.reduce((a, b) => a + b, 0);
      put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
      parts.push(head, new Uint8Array(await f.arrayBuffer()), new Uint8Array((512 - (f.size % 512)) % 512));
    }
    parts.push(new Uint8Array(1024));
    return new Blob(parts, { type: "application/x-tar" });
  }

  function submitForm(onDone) {
    const field = (label, input) => el("label", {}, el("span", {}, label), input);
    const form = el("form.submit", { id: "submit-form", "aria-label": "submit a task" },
      field("command", el("input", { id: "t-command", required: true, placeholder: "python3 main.py", autocomplete: "off" })),
      field("files (optional)", el("input", { id: "t-files", type: "file", multiple: true })),
      field("GPUs", el("input", { id: "t-gpus", type: "number", min: 0, max: 64, value: 0 })),
      field("min VRAM per GPU, GB", el("input", { id: "t-vram", type: "number", min: 0, step: "any", placeholder: "any" })),
      field("price cap, tokens / 1000 GPU-s", el("input", { id: "t-price", type: "number", min: 0.000001, step: "any", value: 1, required: true })),
      field("timeout, s", el("input", { id: "t-timeout", type: "number", min: 1, value: 600, required: true })),
      el("button", { type: "submit" }, "Submit"), el("p.err", { id: "submit-error", role: "alert" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      GP.$("submit-error").textContent = "";
      const requirements = {};
      const gpus = Number(GP.$("t-gpus").value), vram = GP.$("t-vram").value;
      if (gpus > 0) requirements.gpu_count = gpus;
      if (vram) requirements.min_vram_gb = Number(vram);
      const spec = { name: "web", command: ["sh", "-c", GP.$("t-command").value], requirements,
        max_price_micro_per_ksec: Math.round(Number(GP.$("t-price").value) * 1e6), timeout_sec: Number(GP.$("t-timeout").value) };
      try {
        const files = Array.from(GP.$("t-files").files);
        let submitted;
        if (files.length) {
          const data = new FormData();
          data.append("spec", JSON.stringify(spec));
          data.append("bundle", await tarOf(files), "bundle.tar");
          submitted = await GP.json("/v1/tasks", { method: "POST", body: data });
        } else submitted = await GP.post("/v1/tasks", spec);
        onDone(submitted.task_id);
      } catch (e) { GP.$("submit-error").textContent = e.message; }
    });
    return form;
  }

  function taskRows(tasks) {
    return tasks.map((t) => [
      el("a", { href: "#tasks/" + t.task_id, text: t.task_id.slice(0, 12) }),
      el("span.s-" + t.status, {}, t.status), t.waiting_reason ? el("span.warn", {}, t.waiting_reason) : GP.dash(t.miner_id && t.miner_id.slice(0, 16)),
      GP.dash(t.exit_code), GP.when(t.submitted_at), GP.tokens(t.cost),
    ]);
  }

  // Server-Sent Events over fetch, so the bearer token travels in a header and not in the URL.
  async function watch(taskId, out, onEnd) {
    if (stream) stream.abort();
    const controller = (stream = new AbortController());
    GP.cleanup.push(() => controller.abort());
    out.textContent = "";
    try {
      const resp = await GP.api("/v1/tasks/" + encodeURIComponent(taskId) + "/output", { signal: controller.signal });
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
          if (name && name[1] === "end") { out.appendChild(document.createTextNode("\n[task ended]\n")); onEnd(); continue; }
          if (!data.length) continue;
          let chunk = data.join("\n");
          try { chunk = JSON.parse(chunk); } catch (_) { /* plain text */ }
          out.appendChild(document.createTextNode(typeof chunk === "string" ? chunk : JSON.stringify(chunk)));
          out.scrollTop = out.scrollHeight;
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") out.appendChild(document.createTextNode("\n" + e.message));
    }
  }

  async function taskDetail(box, taskId, onChange) {
    const t = await GP.json("/v1/tasks/" + encodeURIComponent(taskId));
    const out = el("pre.output", { id: "output", tabindex: 0, "aria-label": "live output", "aria-live": "polite" });
    const facts = el("p", { id: "task-facts" });
    const artifacts = el("div", { id: "artifacts" });
    const stop = el("button.secondary", { id: "stop-task", type: "button" }, "Stop");
    const render = (task) => {
      facts.replaceChildren("status ", el("b.s-" + task.status, {}, task.status), " · node " + GP.dash(task.miner_id)
        + " · exit code " + GP.dash(task.exit_code) + " · cost " + GP.tokens(task.cost) + " tokens",
      task.waiting_reason ? el("span.warn", {}, " · waiting: " + task.waiting_reason) : "");
      stop.hidden = ["succeeded", "failed", "stopped", "expired"].includes(task.status);
    };
    const showArtifacts = async () => {
      const r = await GP.json("/v1/tasks/" + encodeURIComponent(taskId) + "/result");
      artifacts.replaceChildren(r.artifacts.length ? GP.table(["artifact", "size", "sha256", ""], r.artifacts.map((a) => [
        a.path, a.size + " B", el("code", {}, a.sha256.slice(0, 16) + "…"),
        el("button.secondary", { type: "button", onclick: () => GP.download("/v1/tasks/" + encodeURIComponent(taskId) + "/artifacts/" + a.path.split("/").map(encodeURIComponent).join("/"), a.path.split("/").pop()) }, "Download"),
      ]), "", "artifacts") : el("p.dim", {}, "no artifacts"));
    };
    stop.addEventListener("click", async () => { try { render(await GP.post("/v1/tasks/" + encodeURIComponent(taskId) + "/stop")); } catch (e) { facts.appendChild(GP.errorBox(e)); } });
    render(t);
    box.replaceChildren(GP.card("Task " + taskId, facts, stop, out, el("h3", {}, "Artifacts"), artifacts));
    const onEnd = async () => {
      try { render(await GP.json("/v1/tasks/" + encodeURIComponent(taskId))); await showArtifacts(); await onChange(); } catch (_) { /* shown on next visit */ }
    };
    watch(taskId, out, onEnd);
  }

  async function balanceCard() {
    const [balance, page] = await Promise.all([GP.json("/v1/balance"), GP.json("/v1/transfers?limit=200")]);
    let level = balance.available;
    const points = [{ ts: Date.now() / 1000, v: level }];
    for (const t of page.transfers) {  // newest first: walk back from today's balance
      if (t.to === balance.account) level -= t.amount; else if (t.from === balance.account) level += t.amount;
      points.push({ ts: t.created_at, v: level });
    }
    points.reverse();
    if (points.length === 1) points.unshift({ ts: points[0].ts - 3600, v: level });  // nothing moved: flat
    const box = el("div");
    const card = GP.card("Balance", el("div.stats", {}, GP.stat("available, tokens", GP.tokens(balance.available), "available"),
      GP.stat("held in escrow", GP.tokens(balance.held), "held")), box);
    return { card, draw: () => GP.chart(box, "available balance", "tokens", [{ label: "available" }], GP.columns(points, [(p) => p.v / 1e6])) };
  }

  GP.pages.tasks = async function tasks(view, taskId) {
    const list = el("div", { id: "tasks-list" }), detail = el("div", { id: "task-detail" });
    const refresh = async () => GP.json("/v1/tasks?limit=50").then((ts) => list.replaceChildren(
      GP.table(["task", "status", "node / waiting", "exit", "submitted", "cost"], taskRows(ts), "no tasks yet", "your tasks")));
    const balance = await balanceCard();
    view.replaceChildren(el("div.cols", {}, balance.card, GP.card("Submit a task", submitForm((id) => { location.hash = "#tasks/" + id; }))),
      GP.card("Your tasks", list), detail);
    balance.draw();
    await refresh();
    GP.every(3000, () => refresh().catch(() => {}));
    if (taskId) await taskDetail(detail, taskId, refresh);
  };
})();
