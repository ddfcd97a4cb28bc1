// An owner's page (earnings per epoch, payouts with their receipts and the command that checks one,
// API keys) and the admin's (pending workers to approve, users, trial balance, PoC rounds).
"use strict";

(function () {
  const GP = window.GP, el = GP.el;

  function receiptRow(p, hubUrl) {
    const file = "receipt-" + p.epoch + ".json";
    const save = () => GP.saveBlob(new Blob([JSON.stringify(p.receipt, null, 2) + "\n"], { type: "application/json" }), file);
    return [String(p.epoch), GP.tokens(p.amount), p.status,
      el("button.secondary", { type: "button", onclick: save, "aria-label": "download the receipt of epoch " + p.epoch }, "Receipt"),
      el("code.cmd", {}, "gpupool verify-receipt " + file + " --hub " + hubUrl)];
  }

  async function keysCard(owner) {
    if (!GP.me || GP.me.role !== "admin") return GP.card("API keys", el("p.dim", {}, "Owner API keys (sent by nodes as X-Api-Key) are issued by an admin."));
    const list = el("div"), shown = el("p", { id: "new-key", role: "status" });
    const refresh = async () => {
      const keys = (await GP.json("/v1/admin/api-keys")).filter((k) => !owner || k.owner.toLowerCase() === owner.toLowerCase());
      list.replaceChildren(GP.table(["id", "owner", "label", "created", "revoked"], keys.map((k) => [k.id, k.owner, GP.dash(k.label), GP.when(k.created_at), GP.when(k.revoked_at)]), "no keys", "API keys"));
    };
    const label = el("input", { id: "key-label", placeholder: "label", "aria-label": "key label" });
    const create = el("button", { type: "button" }, "New key for this owner");
    create.addEventListener("click", async () => {
      try {
        const made = await GP.post("/v1/admin/api-keys", { owner, label: label.value });
        shown.replaceChildren("Key (shown once): ", el("code", {}, made.key)); await refresh();
      } catch (e) { shown.replaceChildren(GP.errorBox(e)); }
    });
    await refresh();
    return GP.card("API keys", el("div.row", {}, label, create), shown, list);
  }

  GP.pages.owner = async function owner(view) {
    const saved = localStorage.getItem("gpupool.owner") || "";
    const input = el("input", { id: "owner-address", value: saved, placeholder: "0x… owner address", size: 44, "aria-label": "owner address" });
    const form = el("form.row", { id: "owner-form" }, input, el("button", { type: "submit" }, "Show"));
    const body = el("div", { id: "owner-body" });
    view.replaceChildren(GP.card("Owner", el("p.dim", {}, "A node's earnings go to its owner address."), form), body);
    const show = async (address) => {
      if (!address) return;
      localStorage.setItem("gpupool.owner", address);
      try {
        const r = await GP.json("/v1/rewards/balance?address=" + encodeURIComponent(address));
        const chartBox = el("div");
        const payouts = r.payouts.slice().sort((a, b) => a.epoch - b.epoch);
        body.replaceChildren(
          GP.card("Earnings of " + r.wallet_address, el("div.stats", {}, GP.stat("balance, tokens", GP.tokens(r.balance)),
            GP.stat("carried to next epoch", GP.tokens(r.pending_rewards)), GP.stat("paid in all", GP.tokens(r.total_rewards_distributed))), chartBox),
          GP.card("Payouts and receipts", GP.table(["epoch", "amount", "status", "receipt", "check it offline"],
            payouts.slice().reverse().map((p) => receiptRow(p, location.origin)), "no payouts yet", "payouts")),
          await keysCard(r.wallet_address));
        GP.chart(chartBox, "earnings per epoch", "tokens", [{ label: "paid" }],
          [payouts.map((p) => p.epoch), payouts.map((p) => p.amount / 1e6)], { time: false, bars: true });
      } catch (e) { body.replaceChildren(GP.errorBox(e)); }
    };
    form.addEventListener("submit", (ev) => { ev.preventDefault(); show(input.value.trim()); });
    await show(saved);
  };

  async function workersCard() {
    const box = el("div", { id: "pending-workers" });
    const refresh = async () => {
      const workers = await GP.json("/v1/admin/workers?status=pending");
      box.replaceChildren(GP.table(["worker key", "owner", "type", "since", ""], workers.map((w) => [
        el("code", {}, w.pubkey.slice(0, 16) + "…"), GP.dash(w.owner), GP.dash(w.node_type), GP.when(w.created_at),
        el("button", { type: "button", "aria-label": "approve worker " + w.pubkey.slice(0, 16), onclick: async () => {
          try { await GP.post("/v1/admin/workers/" + encodeURIComponent(w.pubkey) + "/approve"); await refresh(); } catch (e) { box.appendChild(GP.errorBox(e)); }
        } }, "Approve")]), "no worker waits for approval", "pending workers"));
    };
    await refresh();
    return GP.card("Pending workers", box);
  }

  function roundRows(rounds) {
    return rounds.map((r) => [String(r.block_height), r.status, GP.when(r.opened_at),
      r.results && r.results.length ? r.results.map((x) => x.miner_id.slice(0, 12) + ": weight " + x.weight + (x.fraud ? " (fraud)" : "")).join("; ") : "–"]);
  }

  GP.pages.admin = async function admin(view) {
    if (!GP.me || GP.me.role !== "admin") { view.replaceChildren(GP.card("Admin", el("p.dim", {}, "for admins only"))); return; }
    const [users, trial, rounds] = await Promise.all([GP.json("/v1/admin/users"), GP.json("/v1/admin/ledger/trial-balance"), GP.json("/v1/poc/rounds")]);
    view.replaceChildren(await workersCard(),
      el("div.cols", {},
        GP.card("Users", GP.table(["user", "role", "since"], users.map((u) => [u.username, u.role, GP.when(u.created_at)]), "no users", "users")),
        GP.card("Trial balance", el("p", {}, trial.balanced ? el("b.s-succeeded", {}, "balanced") : el("b.s-failed", {}, "NOT balanced"),
          " · total " + GP.tokens(trial.total) + " tokens"),
        GP.table(["account type", "total, tokens"], Object.entries(trial.totals_by_type).map(([k, v]) => [k, GP.tokens(v)]), "no accounts", "totals by account type"))),
      GP.card("PoC rounds", GP.table(["height", "status", "opened", "results"], roundRows(rounds), "no PoC round yet", "PoC rounds")));
  };
})();
