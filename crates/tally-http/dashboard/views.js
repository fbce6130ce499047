// tally's dashboard, its views: each mounts its panels once and refreshes their figures on
// demand (live events, the time-travel control, a form). What they share comes from app.js
// (window.Tally); every figure is set with textContent.
"use strict";

(function () {
  const { state, h, clear, fill, api, q, enc, can, money, shortMoney, count, percent, addDays, daysBack,
    daysBetween, summary, refresh, showError } = window.Tally;

  // ---- views ---------------------------------------------------------------------------------
  function panel(title, ...body) {
    return h("section", { class: "panel" }, h("h2", {}, title), ...body);
  }
  function table(columns, rows, opts) {
    const o = opts || {};
    return h("table", { class: "figures", dataset: o.name ? { table: o.name } : undefined },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", { dataset: r._key ? { key: r._key } : undefined },
        columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(r))))) :
        h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, o.empty || "Nothing to show."))));
  }
  const storeLink = (id) => h("a", { href: `#/store/${enc(id)}` }, id);
  const supplierLink = (id) => h("a", { href: `#/supplier/${enc(id)}` }, id);
  const itemName = (id) => (state.items.get(id) || {}).name || "";

  // The chain: today's net per store (each store's own local date) and the last 30 days.
  function overview(root) {
    const today = h("div", { class: "slot" }), trend = h("div", { class: "slot" }), list = h("div", { class: "slot" });
    root.append(h("h1", {}, "Overview"),
      panel("Today's net sales per store", h("p", { class: "hint" }, "Each store's business date today, in its own time zone."), today),
      panel("Net sales, last 30 days", trend), panel("Stores", list));
    return {
      async refresh() {
        const stores = state.stores;
        // One all-stores report per business date (about 31, however many stores), each store
        // read on its own dates: its today and the 29 days before it.
        const todays = stores.map((s) => s.today).sort();
        const dates = todays.length ? daysBetween(addDays(todays[0], -29), todays[todays.length - 1]) : [];
        const byDate = new Map(await Promise.all(dates.map(async (d) =>
          [d, new Map((await api(q("/v1/reports/daily-sales", { date: d }))).stores.map((r) => [r.store_id, r.net_cents]))])));
        const net = (store, date) => (byDate.get(date) || new Map()).get(store) || 0;
        const todayNet = new Map(stores.map((s) => [s.store_id, net(s.store_id, s.today)]));
        fill(today, TallyCharts.bars(stores.map((s) => ({
          key: s.store_id, label: s.store_id, value: todayNet.get(s.store_id),
          title: `${s.store_id} (${s.today}, ${s.timezone}): ${money(todayNet.get(s.store_id))}`,
        })), { name: "today", label: "Today's net sales per store", format: money, short: shortMoney }));
        const series = stores.map((s) => ({
          key: s.store_id, label: s.store_id, values: daysBack(s.today, 30).map((d) => net(s.store_id, d)),
        }));
        const total = { key: "all", label: "All stores", strong: true,
          values: series.length ? series[0].values.map((_, i) => series.reduce((t, s) => t + s.values[i], 0)) : [] };
        const top = [...series].sort((a, b) => b.values.reduce((x, y) => x + y, 0) - a.values.reduce((x, y) => x + y, 0)).slice(0, 5);
        const xs = Array.from({ length: 30 }, (_, i) => (i === 29 ? "today" : `−${29 - i}d`));
        fill(trend, TallyCharts.lines([total, ...top], { name: "trend", label: "Net sales per day over the last 30 days: all stores and the five largest", format: money, short: shortMoney, xs }),
          h("p", { class: "legend" }, [total, ...top].map((s, k) => h("span", { class: `key s${k % 8}${s.strong ? " strong" : ""}` }, s.label))));
        fill(list, table([
          { label: "Store", cell: (r) => storeLink(r.store_id) },
          { label: "Time zone", cell: (r) => r.timezone },
          { label: "Today", cell: (r) => r.today },
          { label: "Net today", num: true, cell: (r) => money(todayNet.get(r.store_id)) },
          { label: "Net, 30 days", num: true, cell: (r) => money(series.find((s) => s.key === r.store_id).values.reduce((a, b) => a + b, 0)) },
        ], stores.map((s) => ({ ...s, _key: s.store_id })), { name: "stores" }));
      },
    };
  }

  function directory(root, kind) {
    const rows = kind === "stores" ? state.stores : state.suppliers;
    root.append(h("h1", {}, kind === "stores" ? "Stores" : "Suppliers"), panel(`${rows.length} registered`,
      kind === "stores"
        ? table([{ label: "Store", cell: (r) => storeLink(r.store_id) }, { label: "Name", cell: (r) => r.name },
          { label: "Time zone", cell: (r) => r.timezone }, { label: "Business date now", cell: (r) => r.today }], rows)
        : table([{ label: "Supplier", cell: (r) => supplierLink(r.supplier_id) }, { label: "Name", cell: (r) => r.name },
          { label: "Items", num: true, cell: (r) => count([...state.items.values()].filter((i) => i.supplier_id === r.supplier_id).length) }], rows)));
    return { async refresh() {} };
  }

  // A day's history: every version of its figures, each with the event that changed it.
  function historyPanel(slot, path, title, net) {
    return async (date) => {
      const a = await api(q(`${path}/${date}/history`, {}));
      let before = 0;
      fill(slot, panel(`${title} ${date}: why did it change?`,
        h("p", { class: "hint" }, `${a.versions.length} version(s), in the order the system learned them.`),
        table([
          { label: "Position", num: true, cell: (r) => String(r.position) },
          { label: "Recorded at", cell: (r) => r.recorded_at.replace("T", " ").replace(/\.\d+Z$/, "Z") },
          { label: "Event", cell: (r) => r.event_type },
          { label: "Command", cell: (r) => h("code", {}, r.command_id || "") },
          { label: "Figure after", num: true, cell: (r) => money(net(r)) },
          { label: "Change", num: true, cell: (r) => { const d = net(r) - before; before = net(r); return (d >= 0 ? "+" : "") + money(d); } },
        ], a.versions.map((v) => ({ ...v, _key: String(v.position) })), { name: "history", empty: "No figures on this day." }),
        h("button", { type: "button", onclick: () => clear(slot) }, "Close")));
      slot.scrollIntoView({ block: "nearest" });
    };
  }

  function storeView(root, id) {
    const s = state.stores.find((x) => x.store_id === id);
    if (!s) { root.append(h("h1", {}, id), h("p", { class: "error" }, "No such store, or this key may not read it.")); return { async refresh() {} }; }
    const chart = h("div", { class: "slot" }), days = h("div", { class: "slot" }), history = h("div", { class: "slot" });
    const top = h("div", { class: "slot" }), low = h("div", { class: "slot" }), inv = h("div", { class: "slot" });
    const threshold = h("input", { id: "threshold", type: "number", min: 0, max: 1000000, value: 5, inputmode: "numeric" });
    const search = h("input", { id: "item-search", type: "search", placeholder: "item id or name", autocomplete: "off" });
    let inventory = [];
    const showInventory = () => {
      const needle = search.value.trim().toLowerCase();
      const hits = inventory.filter((r) => !needle || r.item_id.toLowerCase().includes(needle) || itemName(r.item_id).toLowerCase().includes(needle));
      fill(inv, h("p", { class: "hint" }, `${hits.length} of ${inventory.length} items${hits.length > 100 ? ", the first 100 shown" : ""}.`),
        table([{ label: "Item", cell: (r) => r.item_id }, { label: "Name", cell: (r) => itemName(r.item_id) },
          { label: "On hand", num: true, cell: (r) => count(r.on_hand) }], hits.slice(0, 100).map((r) => ({ ...r, _key: r.item_id })), { name: "inventory" }));
    };
    search.addEventListener("input", showInventory);
    const why = historyPanel(history, `/v1/reports/stores/${enc(id)}/daily-sales`, "Net sales of", (r) => r.net_cents);
    root.append(h("h1", {}, `Store ${id}`, h("span", { class: "sub" }, ` ${s.name} · ${s.timezone} · business date ${s.today}`)),
      panel("Net sales per day, last 30 days", chart), panel("Daily report", days), history,
      h("div", { class: "cols" },
        panel("Top items, last 30 days", top),
        panel("Low stock", h("label", { for: "threshold" }, "At most "), threshold, h("span", {}, " on hand"), low)),
      panel("Inventory", h("label", { for: "item-search" }, "Find an item "), search, inv));
    threshold.addEventListener("change", () => refresh(true));
    return {
      async refresh() {
        const from = addDays(s.today, -29);
        const [report, tops, lows, stock] = await Promise.all([
          api(q(`/v1/reports/stores/${enc(id)}/daily-sales`, { from, to: s.today })),
          api(q("/v1/reports/top-items", { from, to: s.today, store_id: id, limit: 10 })),
          api(q(`/v1/inventory/${enc(id)}/low-stock`, { threshold: threshold.value || 0 })),
          api(q(`/v1/inventory/${enc(id)}`, {})),
        ]);
        const byDate = new Map(report.days.map((d) => [d.date, d]));
        fill(chart, TallyCharts.bars(daysBack(s.today, 30).map((d) => ({ key: d, label: d.slice(5), value: (byDate.get(d) || {}).net_cents || 0 })),
          { name: "store-days", label: `Net sales per day of ${id}`, format: money, short: shortMoney }));
        fill(days, table([
          { label: "Date", cell: (r) => r.date },
          { label: "Sales", num: true, cell: (r) => count(r.transactions) },
          { label: "Units", num: true, cell: (r) => count(r.units_sold) },
          { label: "Gross", num: true, cell: (r) => money(r.gross_cents) },
          { label: "Returned", num: true, cell: (r) => money(r.returned_cents) },
          { label: "Net", num: true, cell: (r) => money(r.net_cents) },
          { label: "", cell: (r) => h("button", { type: "button", class: "link", "aria-label": `Why did ${r.date} change?`, onclick: () => why(r.date).catch(showError) }, "why?") },
        ], [...report.days].reverse().map((d) => ({ ...d, _key: d.date })), { name: "days", empty: "No sales in the last 30 days." }));
        fill(top, table([{ label: "Item", cell: (r) => r.item_id }, { label: "Name", cell: (r) => itemName(r.item_id) },
          { label: "Units", num: true, cell: (r) => count(r.units_sold) }, { label: "Net", num: true, cell: (r) => money(r.net_cents) }],
        tops.items.map((r) => ({ ...r, _key: r.item_id })), { name: "top-items" }));
        fill(low, table([{ label: "Item", cell: (r) => r.item_id }, { label: "Name", cell: (r) => itemName(r.item_id) },
          { label: "On hand", num: true, cell: (r) => count(r.on_hand) }], lows.items.map((r) => ({ ...r, _key: r.item_id })), { name: "low-stock", empty: "Nothing that low." }));
        inventory = stock.items;
        showInventory();
      },
    };
  }

  function supplierView(root, id) {
    const s = state.suppliers.find((x) => x.supplier_id === id);
    if (!s) { root.append(h("h1", {}, id), h("p", { class: "error" }, "No such supplier, or this key may not read it.")); return { async refresh() {} }; }
    const chart = h("div", { class: "slot" }), days = h("div", { class: "slot" }), history = h("div", { class: "slot" });
    const why = historyPanel(history, `/v1/reports/suppliers/${enc(id)}/daily`, "Deliveries and sales of", (r) => r.sales_cents);
    root.append(h("h1", {}, `Supplier ${id}`, h("span", { class: "sub" }, ` ${s.name}`)),
      panel("Units delivered and sold per day, last 30 days", chart), panel("Deliveries and sell-through", days), history);
    return {
      async refresh() {
        // Stores' business dates run from a day behind UTC to a day ahead: the 30 days to tomorrow.
        const last = addDays(new Date().toISOString().slice(0, 10), 1);
        const dates = daysBack(last, 30);
        const report = await api(q(`/v1/reports/suppliers/${enc(id)}/daily`, { from: dates[0], to: last }));
        const byDate = new Map(report.days.map((d) => [d.date, d]));
        const per = (k) => dates.map((d) => (byDate.get(d) || {})[k] || 0);
        fill(chart, TallyCharts.lines([
          { key: "supplied", label: "Units delivered", values: per("units_supplied") },
          { key: "sold", label: "Units sold", values: per("units_sold") },
        ], { name: "supplier-days", label: `Units delivered and sold per day, ${id}`, format: count, xs: dates.map((d) => d.slice(5)) }),
        h("p", { class: "legend" }, h("span", { class: "key s0" }, "delivered"), h("span", { class: "key s1" }, "sold")));
        fill(days, table([
          { label: "Date", cell: (r) => r.date },
          { label: "Deliveries", num: true, cell: (r) => count(r.deliveries) },
          { label: "Units delivered", num: true, cell: (r) => count(r.units_supplied) },
          { label: "Cost", num: true, cell: (r) => money(r.supply_cost_cents) },
          { label: "Units sold", num: true, cell: (r) => count(r.units_sold) },
          { label: "Sales", num: true, cell: (r) => money(r.sales_cents) },
          { label: "Sell-through", num: true, cell: (r) => percent(r.units_sold, r.units_supplied) },
          { label: "", cell: (r) => h("button", { type: "button", class: "link", "aria-label": `Why did ${r.date} change?`, onclick: () => why(r.date).catch(showError) }, "why?") },
        ], [...report.days].reverse().map((d) => ({ ...d, _key: d.date })), { name: "supplier-days", empty: "Nothing delivered or sold in the last 30 days." }));
      },
    };
  }

  // Command rates, rejections by reason and projection lag from /metrics; the feed's events.
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      const m = /^([a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN)$/.exec(line);
      if (!m) continue;
      const labels = {};
      (m[2] || "").replace(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g, (_, k, v) => { labels[k] = v; return ""; });
      out.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return out;
  }
  function live(root) {
    const rates = h("div", { class: "slot" }), rejections = h("div", { class: "slot" }), lag = h("div", { class: "slot" }), events = h("div", { class: "slot" });
    root.append(h("h1", {}, "Live"), h("div", { class: "cols" }, panel("Commands per second", rates), panel("Rejections by reason", rejections)),
      panel("Projection lag", lag), can.events() ? panel("Events", events) : null);
    let last = null;
    const showEvents = () => fill(events, table([
      { label: "Position", num: true, cell: (r) => String(r.position) },
      { label: "Recorded", cell: (r) => (r.recorded_at || "").slice(11, 19) },
      { label: "Type", cell: (r) => r.type }, { label: "Stream", cell: (r) => r.stream_id },
      { label: "What", cell: (r) => summary(r) }], state.ticker.slice(0, 50).map((e) => ({ ...e, _key: String(e.position) })), { name: "events", empty: "Waiting for events…" }));
    const view = {
      onEvent: () => { if (can.events()) showEvents(); },
      async refresh() {
        const r = await fetch("/metrics", { cache: "no-store" });
        const m = parseMetrics(await r.text());
        const sum = (name) => m.filter((x) => x.name === name).reduce((t, x) => t + x.value, 0);
        const now = { t: Date.now(), accepted: sum("tally_commands_accepted_total"), processed: sum("tally_commands_processed_total"), rejected: sum("tally_commands_rejected_total") };
        const per = (k) => (last && now.t > last.t ? ((now[k] - last[k]) * 1000) / (now.t - last.t) : 0);
        fill(rates, table([{ label: "", cell: (r) => r.k }, { label: "per second", num: true, cell: (r) => r.rate }, { label: "since start", num: true, cell: (r) => r.total }],
          [["accepted", "accepted"], ["processed", "processed"], ["rejected", "rejected"]].map(([k, label]) => ({ k: label, rate: last ? count(Math.round(per(k))) : "…", total: count(now[k]), _key: k })), { name: "rates" }));
        last = now;
        const reasons = new Map();
        for (const x of m.filter((x) => x.name === "tally_commands_rejected_total" && x.value > 0)) reasons.set(x.labels.reason, (reasons.get(x.labels.reason) || 0) + x.value);
        fill(rejections, table([{ label: "Reason", cell: (r) => r.reason }, { label: "Commands", num: true, cell: (r) => count(r.n) }],
          [...reasons].sort((a, b) => b[1] - a[1]).map(([reason, n]) => ({ reason, n, _key: reason })), { name: "rejections", empty: "No rejections." }));
        const lagOf = (name) => new Map(m.filter((x) => x.name === name && x.labels.model).map((x) => [x.labels.model, x.value]));
        const events_ = lagOf("tally_projection_lag_events"), seconds = lagOf("tally_projection_lag_seconds");
        fill(lag, table([{ label: "Projection", cell: (r) => r.p }, { label: "Events behind", num: true, cell: (r) => count(r.e) }, { label: "Seconds behind", num: true, cell: (r) => r.s.toFixed(2) }],
          [...events_.keys()].sort().map((p) => ({ p, e: events_.get(p), s: seconds.get(p) || 0, _key: p })), { name: "lag", empty: "This process runs no projector." }));
        if (can.events()) showEvents();
      },
    };
    const timer = setInterval(() => { if (state.view === view) refresh(false); else clearInterval(timer); }, 2000);
    return view;
  }

  // The named queries: each runnable with its parameters, as a table or a CSV download.
  function queries(root) {
    const slot = h("div", { class: "slot" });
    root.append(h("h1", {}, "Queries"), h("p", { class: "hint" }, "Named SQL queries from the server's configuration, the ones this key may call."), slot);
    return {
      async refresh() {
        if (slot.firstChild) return; // forms keep what was typed; answers are run on demand
        const list = (await api("/v1/queries")).queries;
        if (!list.length) { fill(slot, h("p", { class: "empty" }, "No named queries are configured for this key.")); return; }
        fill(slot, list.map((qd) => {
          const out = h("div", { class: "slot" });
          const inputs = qd.params.map((p) => {
            const id = `q-${qd.name}-${p.name}`;
            return [p, h("label", { for: id }, p.name, p.required ? " *" : ""),
              h("input", { id, name: p.name, type: p.type === "date" ? "date" : p.type === "integer" ? "number" : "text", value: p.default || "", required: p.required })];
          });
          const params = () => Object.fromEntries(inputs.map(([p, , input]) => [p.name, input.value]).filter(([, v]) => v !== ""));
          const run = async (ev) => {
            ev.preventDefault();
            try {
              const a = await api(q(`/v1/queries/${enc(qd.name)}`, params(), false));
              fill(out, h("p", { class: "hint" }, `${a.rows.length} row(s) at position ${a.position}${a.truncated ? ", truncated" : ""}.`),
                table(a.columns.map((c, i) => ({ label: c.name, num: /int|num|real|cents/i.test(c.type || ""), cell: (r) => (r[i] === null ? "" : String(r[i])) })), a.rows, { name: `query-${qd.name}` }));
            } catch (e) { fill(out, h("p", { class: "error" }, e.message)); }
          };
          const download = async () => {
            try {
              const body = await api(q(`/v1/queries/${enc(qd.name)}`, params(), false), { csv: true });
              const url = URL.createObjectURL(new Blob([body], { type: "text/csv" }));
              const a = h("a", { href: url, download: `${qd.name}.csv` });
              document.body.appendChild(a); a.click(); a.remove();
              setTimeout(() => URL.revokeObjectURL(url), 10000);
            } catch (e) { fill(out, h("p", { class: "error" }, e.message)); }
          };
          return panel(qd.name, h("p", { class: "hint" }, qd.description),
            h("form", { class: "query", dataset: { query: qd.name }, onsubmit: run },
              inputs.map(([, label, input]) => h("span", { class: "field" }, label, input)),
              h("button", { type: "submit" }, "Run"), h("button", { type: "button", onclick: download }, "CSV")), out);
        }));
      },
    };
  }

  function admin(root) {
    const keys = h("div", { class: "slot" }), dead = h("div", { class: "slot" }), faults = h("div", { class: "slot" }), models = h("div", { class: "slot" });
    root.append(h("h1", {}, "Admin"), panel("API keys", keys), panel("Read models", models), panel("Parked and stopped events", faults), panel("Dead letters", dead));
    const act = (path) => async () => { try { await api(path, { method: "POST", body: {} }); await refresh(true); } catch (e) { showError(e); } };
    return {
      async refresh() {
        const [k, d, f, p] = await Promise.all([api("/v1/admin/api-keys"), api("/v1/admin/dead-letters"), api("/v1/admin/projections/faults"), api("/v1/admin/projections")]);
        fill(keys, table([
          { label: "Key", cell: (r) => h("code", {}, r.key_id) }, { label: "Role", cell: (r) => r.role }, { label: "Scope", cell: (r) => r.scope || "" },
          { label: "Requests", num: true, cell: (r) => count(r.requests) }, { label: "Refused", num: true, cell: (r) => count(r.rejections) },
          { label: "Last used", cell: (r) => (r.last_used_at || "never").replace("T", " ").replace(/\.\d+Z$/, "Z") },
          { label: "State", cell: (r) => (r.revoked_at ? "revoked" : "active") }], k.keys.map((r) => ({ ...r, _key: r.key_id })), { name: "keys" }));
        fill(models, table([{ label: "Read model", cell: (r) => r.name }, { label: "Position", num: true, cell: (r) => count(r.position) },
          { label: "Behind", num: true, cell: (r) => count(r.lag_events || 0) }, { label: "Status", cell: (r) => r.status }, { label: "Parked", num: true, cell: (r) => count(r.parked || 0) }],
        p.projections.map((r) => ({ ...r, _key: r.name })), { name: "projections" }));
        fill(faults, table([{ label: "Read model", cell: (r) => r.projection }, { label: "Position", num: true, cell: (r) => String(r.position) },
          { label: "State", cell: (r) => r.state }, { label: "Reason", cell: (r) => r.reason }, { label: "At", cell: (r) => r.at },
          { label: "", cell: (r) => h("span", {}, h("button", { type: "button", onclick: act(`/v1/admin/projections/${enc(r.projection)}/faults/${r.position}/retry`) }, "Retry"), " ",
            h("button", { type: "button", onclick: act(`/v1/admin/projections/${enc(r.projection)}/faults/${r.position}/skip`) }, "Skip")) }],
        f.faults.map((r) => ({ ...r, _key: `${r.projection}@${r.position}` })), { name: "faults", empty: "None: every read model is applying every event." }));
        fill(dead, table([{ label: "Message", cell: (r) => h("code", {}, r.message_id) }, { label: "Command", cell: (r) => r.kind || "undecodable" },
          { label: "Partition", cell: (r) => r.partition_key }, { label: "Failed at", cell: (r) => r.failed_at }, { label: "Reason", cell: (r) => r.reason },
          { label: "", cell: (r) => h("button", { type: "button", onclick: act(`/v1/admin/dead-letters/${enc(r.message_id)}/replay`) }, "Replay") }],
        d.dead_letters.map((r) => ({ ...r, _key: r.message_id })), { name: "dead-letters", empty: "No dead letters." }));
      },
    };
  }

  window.Tally.views = { overview, directory, storeView, supplierView, live, queries, admin };
})();
