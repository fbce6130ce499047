// tally's dashboard: the key, the API, the page around the views, the live feed and the routes
// (the views are in views.js). It holds no data of its own: it calls the API with the key entered on the page
// (kept in this tab's session storage, sent as a bearer header, never in a URL or a cookie), and
// shows what that key may read. Views are routed by the URL's fragment (#/store/s-1, ...), so the
// back button and bookmarks work; every figure is built with textContent (no HTML from the API is
// ever parsed).
"use strict";

(function () {
  const KEY = "tally.key";
  const state = {
    key: sessionStorage.getItem(KEY),
    me: null,
    stores: [],
    suppliers: [],
    items: new Map(),
    asOf: null, // an RFC 3339 instant, or null for the books as they are now
    view: null, // {refresh} of the view on screen
    feed: null, // AbortController of the live feed
    ticker: [],
    lastRefresh: 0,
    pending: null,
  };

  // ---- DOM helpers -------------------------------------------------------------------------
  const $ = (sel, root) => (root || document).querySelector(sel);
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function fill(slot, ...content) { clear(slot).append(...content.flat().filter(Boolean)); }

  // ---- figures ----------------------------------------------------------------------------
  // Integer cents as a decimal amount, grouped by thousands; no floating point touches the cents.
  function money(cents) {
    const n = Math.trunc(Number(cents) || 0);
    const sign = n < 0 ? "−" : "";
    const abs = Math.abs(n);
    const units = Math.trunc(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${sign}${units}.${String(abs % 100).padStart(2, "0")}`;
  }
  function shortMoney(cents) {
    const abs = Math.abs(cents);
    if (abs >= 100000000) return `${Math.round(cents / 10000000) / 10}M`;
    if (abs >= 100000) return `${Math.round(cents / 10000) / 10}k`;
    return money(cents).replace(/\.00$/, "");
  }
  const count = (n) => String(Math.trunc(Number(n) || 0)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  // A share in per mille, as a percentage with one decimal (integer arithmetic).
  function percent(part, whole) {
    if (!whole) return "—";
    const permille = Math.round((part * 1000) / whole);
    return `${Math.trunc(permille / 10)}.${Math.abs(permille % 10)} %`;
  }
  function addDays(date, n) {
    const [y, m, d] = date.split("-").map(Number);
    const t = new Date(Date.UTC(y, m - 1, d + n));
    return t.toISOString().slice(0, 10);
  }
  // Every date from `first` to `last`, both included.
  function daysBetween(first, last) {
    const ms = (d) => Date.UTC(...d.split("-").map((x, i) => Number(x) - (i === 1 ? 1 : 0)));
    return daysBack(last, Math.round((ms(last) - ms(first)) / 86400000) + 1);
  }
  function daysBack(today, n) {
    const out = [];
    for (let i = n - 1; i >= 0; i--) out.push(addDays(today, -i));
    return out;
  }

  // ---- the API -----------------------------------------------------------------------------
  class ApiFailure extends Error {
    constructor(status, problem) {
      const fields = (problem.errors || []).map((e) => `${e.field}: ${e.message}`).join("; ");
      super(`${problem.title || "Error"} (${status})${problem.detail ? ": " + problem.detail : ""}${fields ? " — " + fields : ""}`);
      this.status = status;
    }
  }
  async function api(path, opts) {
    const o = opts || {};
    const headers = { Authorization: `Bearer ${state.key}`, Accept: o.csv ? "text/csv" : "application/json" };
    if (o.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method: o.method || "GET", headers, cache: "no-store",
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
    });
    if (r.status === 401) { signOut("That key was not accepted (unknown or revoked)."); throw new ApiFailure(401, {}); }
    if (!r.ok) {
      let problem = {};
      try { problem = await r.json(); } catch (_) { /* not problem+json */ }
      throw new ApiFailure(r.status, problem);
    }
    return o.csv ? r.text() : r.json();
  }
  // A query path with its parameters, and `as_of` when travelling in time.
  function q(path, params, travels) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") p.set(k, v);
    if (travels !== false && state.asOf) p.set("as_of", state.asOf);
    const s = p.toString();
    return s ? `${path}?${s}` : path;
  }
  const enc = encodeURIComponent;
  const can = {
    reports: () => ["admin", "analyst"].includes(state.me.role),
    events: () => ["admin", "auditor"].includes(state.me.role),
    admin: () => state.me.role === "admin",
  };

  // ---- signing in and out -----------------------------------------------------------------
  async function signIn(key) {
    state.key = key;
    try {
      state.me = await api("/v1/me");
    } catch (e) {
      state.key = null;
      showLogin(e.status === 401 ? "That key was not accepted (unknown or revoked)." : String(e.message));
      return;
    }
    sessionStorage.setItem(KEY, key);
    const [stores, suppliers, items] = await Promise.all([
      api("/v1/stores"), api("/v1/suppliers"), api("/v1/items"),
    ]);
    state.stores = stores.stores;
    state.suppliers = suppliers.suppliers;
    state.items = new Map(items.items.map((i) => [i.item_id, i]));
    $("#login").hidden = true;
    $("#app").hidden = false;
    renderChrome();
    startFeed();
    route();
  }
  function signOut(message) {
    sessionStorage.removeItem(KEY);
    state.key = null; state.me = null;
    if (state.feed) state.feed.abort();
    state.feed = null;
    // Nothing the last key could read stays on the page.
    state.view = null; state.stores = []; state.suppliers = []; state.items = new Map(); state.ticker = [];
    clear($("#view")); clear($("#ticker-list")); clear($("#nav")); clear($("#who"));
    showLogin(message);
  }
  function showLogin(message) {
    $("#app").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#key").value = "";
    $("#key").focus();
  }

  // ---- the page around the views ----------------------------------------------------------
  function home() {
    const m = state.me;
    if (m.role === "store") return `#/store/${enc(m.scope)}`;
    if (m.role === "supplier") return `#/supplier/${enc(m.scope)}`;
    if (m.role === "auditor") return "#/live";
    return "#/overview";
  }
  function renderChrome() {
    const m = state.me;
    const links = [];
    if (can.reports()) links.push(["#/overview", "Overview"]);
    if (m.role === "store") links.push([home(), "My store"]);
    if (m.role === "supplier") links.push([home(), "My deliveries"]);
    if (can.reports()) links.push(["#/stores", "Stores"], ["#/suppliers", "Suppliers"]);
    links.push(["#/live", "Live"], ["#/queries", "Queries"]);
    if (can.admin()) links.push(["#/admin", "Admin"]);
    fill($("#nav"), links.map(([href, label]) => h("a", { href }, label)));
    fill($("#who"), h("span", { class: "role" }, m.role), m.scope ? h("span", { class: "scope" }, m.scope) : null,
      h("button", { type: "button", class: "link", onclick: () => signOut("Signed out.") }, "Sign out"));
    highlightNav();
  }
  function highlightNav() {
    for (const a of document.querySelectorAll("#nav a")) {
      const on = location.hash.startsWith(a.getAttribute("href"));
      if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
  }
  function renderTravel() {
    const banner = $("#travel-banner");
    if (state.asOf) {
      banner.hidden = false;
      banner.textContent = `Time travel: the books as the system knew them at ${state.asOf.replace("T", " ").replace(/\.\d+Z$/, "Z")}. Live updates are paused.`;
    } else {
      banner.hidden = true;
    }
    $("#travel-now").disabled = !state.asOf;
  }
  function applyTravel(ev) {
    ev.preventDefault();
    const raw = $("#as-of").value.trim();
    const msg = $("#travel-error");
    msg.textContent = "";
    if (!raw) { state.asOf = null; renderTravel(); refresh(true); return; }
    // RFC 3339 as typed, or a local "YYYY-MM-DD HH:MM" read in this browser's zone.
    const t = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(raw) ? raw : raw.replace(" ", "T"));
    if (Number.isNaN(t.getTime())) { msg.textContent = "Give an instant like 2026-03-14T18:00:00Z or 2026-03-14 18:00."; return; }
    if (t.getTime() > Date.now()) { msg.textContent = "That is in the future: the books cannot know it yet."; return; }
    state.asOf = t.toISOString();
    renderTravel();
    refresh(true);
  }

  // ---- the live feed and ticker ------------------------------------------------------------
  function summary(e) {
    const d = e.data || {};
    const bits = [d.store_id, d.supplier_id, d.sale_id || d.delivery_id || d.return_id || d.adjustment_id || d.item_id];
    let money_ = "";
    if (Array.isArray(d.lines)) {
      const cents = d.lines.reduce((s, l) => s + (l.quantity || 0) * (l.unit_price_cents || l.unit_cost_cents || 0) - (l.discount_cents || 0), 0);
      if (cents) money_ = money(cents);
    }
    return [bits.filter(Boolean).join(" · "), money_].filter(Boolean).join("  ");
  }
  function tick(e) {
    state.ticker.unshift(e);
    state.ticker.length = Math.min(state.ticker.length, 100);
    const list = $("#ticker-list");
    const item = h("li", { dataset: { position: e.position, type: e.type } },
      h("span", { class: "pos" }, `#${e.position}`),
      h("span", { class: "type" }, e.type),
      h("span", { class: "what" }, summary(e)));
    list.prepend(item);
    while (list.children.length > 12) list.removeChild(list.lastChild);
    if (state.view && state.view.onEvent) state.view.onEvent(e);
  }
  async function startFeed() {
    const ticker = $("#ticker");
    if (!can.events()) { ticker.hidden = true; pollForChanges(); return; }
    ticker.hidden = false;
    const ctl = new AbortController();
    state.feed = ctl;
    let after = null;
    let backoff = 500;
    while (!ctl.signal.aborted) {
      try {
        if (after === null) {
          const page = await api("/v1/admin/projections").catch(() => null);
          after = page ? Math.max(0, page.head - 10) : 0;
        }
        const r = await fetch(`/v1/events/live?after=${after}`, {
          headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" }, signal: ctl.signal,
        });
        if (!r.ok || !r.body) throw new Error(`feed: ${r.status}`);
        $("#ticker-state").textContent = "live";
        backoff = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (!data) continue;
            try {
              const e = JSON.parse(data);
              after = e.position;
              tick(e);
              changed();
            } catch (_) { /* a keep-alive or a comment */ }
          }
        }
      } catch (err) {
        if (ctl.signal.aborted) return;
        $("#ticker-state").textContent = "reconnecting…";
      }
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }
  // Keys that may not read the log see changes by polling instead.
  function pollForChanges() {
    const key = state.key;
    const loop = () => { if (state.key === key) { changed(); setTimeout(loop, 3000); } };
    setTimeout(loop, 3000);
  }
  // Something happened: refresh the view on screen soon (at most about twice a second), unless
  // it shows an earlier moment.
  function changed() {
    if (state.asOf || state.pending) return;
    const wait = Math.max(150, 500 - (Date.now() - state.lastRefresh));
    state.pending = setTimeout(() => { state.pending = null; refresh(false); }, wait);
  }
  async function refresh(loud) {
    if (!state.view) return;
    state.lastRefresh = Date.now();
    const status = $("#status");
    try {
      await state.view.refresh();
      status.textContent = "";
    } catch (e) {
      if (loud || e.status !== 401) status.textContent = String(e.message || e);
    }
  }

  function showError(e) { $("#status").textContent = String(e.message || e); }

  function route() {
    if (!state.me) return;
    if (!location.hash || location.hash === "#" || location.hash === "#/") { location.replace(home()); return; }
    const [, name, arg] = location.hash.split("/").map(decodeURIComponent);
    const root = clear($("#view"));
    $("#status").textContent = "";
    const { overview, directory, storeView, supplierView, live, queries, admin } = window.Tally.views;
    const views = {
      overview: () => (can.reports() ? overview(root) : null),
      stores: () => (can.reports() ? directory(root, "stores") : null),
      suppliers: () => (can.reports() ? directory(root, "suppliers") : null),
      store: () => storeView(root, arg),
      supplier: () => supplierView(root, arg),
      live: () => live(root),
      queries: () => queries(root),
      admin: () => (can.admin() ? admin(root) : null),
    };
    const make = views[name];
    state.view = (make && make()) || null;
    if (!state.view) { location.replace(home()); return; }
    highlightNav();
    document.title = `tally · ${name}`;
    refresh(true);
  }

  window.Tally = { state, h, clear, fill, api, q, enc, can, money, shortMoney, count, percent, addDays, daysBack,
    daysBetween, summary, refresh, showError };

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#key").value.trim();
      if (key) signIn(key);
    });
    $("#travel-form").addEventListener("submit", applyTravel);
    $("#travel-now").addEventListener("click", () => { $("#as-of").value = ""; state.asOf = null; $("#travel-error").textContent = ""; renderTravel(); refresh(true); });
    window.addEventListener("hashchange", route);
    renderTravel();
    if (state.key) signIn(state.key); else showLogin("");
  });
})();
