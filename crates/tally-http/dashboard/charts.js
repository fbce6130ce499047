// tally's charts: bars and lines drawn as SVG, no library. Each mark carries its figure in
// data-* attributes (the browser tests read them) and a <title> (the hover text); each chart has
// an aria-label saying what it shows, and its figures are also in a table beside it.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A "nice" step for about `count` ticks over [0, max]: 1, 2 or 5 times a power of ten.
  function niceStep(max, count) {
    if (max <= 0) return 1;
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
    return step * mag;
  }

  // The y scale of values `values` (which may be negative), with its ticks.
  function scale(values, height, top) {
    let lo = Math.min(0, ...values);
    let hi = Math.max(0, ...values);
    if (hi === lo) hi = lo + 1;
    const step = niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
    const y = (v) => top + height - ((v - lo) / (hi - lo)) * height;
    const ticks = [];
    for (let t = lo; t <= hi + step / 2; t += step) ticks.push(t);
    return { y, ticks };
  }

  function frame(label, w, h) {
    const svg = el("svg", {
      viewBox: `0 0 ${w} ${h}`,
      role: "img",
      "aria-label": label,
      class: "chart",
      preserveAspectRatio: "xMidYMid meet",
    });
    svg.appendChild(el("title", {}, label));
    return svg;
  }

  function axis(svg, s, left, right, format) {
    for (const t of s.ticks) {
      const y = s.y(t);
      svg.appendChild(el("line", { x1: left, x2: right, y1: y, y2: y, class: t === 0 ? "zero" : "grid" }));
      svg.appendChild(el("text", { x: left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format(t)));
    }
  }

  // Bars: `data` is [{key, label, value, title}]; opts {label, format, name}.
  function bars(data, opts) {
    const w = 720, h = 260, left = 84, right = w - 12, top = 14, bottom = 58;
    const svg = frame(opts.label, w, h);
    svg.dataset.chart = opts.name;
    const s = scale(data.map((d) => d.value), h - top - bottom, top);
    axis(svg, s, left, right, opts.short || opts.format);
    const band = (right - left) / Math.max(1, data.length);
    const bar = Math.max(2, Math.min(48, band * 0.7));
    const every = Math.max(1, Math.ceil(data.length / 16)); // labels that fit side by side
    data.forEach((d, i) => {
      const x = left + i * band + (band - bar) / 2;
      const y0 = s.y(0), y1 = s.y(d.value);
      const r = el("rect", {
        x, width: bar,
        y: Math.min(y0, y1), height: Math.max(1, Math.abs(y1 - y0)),
        class: d.value < 0 ? "bar negative" : "bar",
        "data-key": d.key, "data-value": d.value,
      });
      r.appendChild(el("title", {}, d.title || `${d.label}: ${opts.format(d.value)}`));
      svg.appendChild(r);
      if ((data.length - 1 - i) % every !== 0) return; // counted from the last, which is always labelled
      const lx = x + bar / 2, ly = h - bottom + 14;
      const text = el("text", { x: lx, y: ly, class: "label", "text-anchor": "end",
        transform: `rotate(-35 ${lx} ${ly})` }, d.label);
      svg.appendChild(text);
    });
    if (!data.length) svg.appendChild(el("text", { x: w / 2, y: h / 2, class: "empty", "text-anchor": "middle" }, "nothing yet"));
    return svg;
  }

  // Lines over shared x labels: `series` is [{key, label, values, strong}]; opts {label, format, xs, name}.
  function lines(series, opts) {
    const w = 720, h = 280, left = 84, right = w - 12, top = 14, bottom = 40;
    const svg = frame(opts.label, w, h);
    svg.dataset.chart = opts.name;
    const all = series.flatMap((s) => s.values);
    const s = scale(all.length ? all : [0], h - top - bottom, top);
    axis(svg, s, left, right, opts.short || opts.format);
    const n = opts.xs.length;
    const x = (i) => left + (n <= 1 ? 0 : (i * (right - left)) / (n - 1));
    const every = Math.max(1, Math.ceil(n / 8));
    opts.xs.forEach((label, i) => {
      if ((n - 1 - i) % every === 0) {
        svg.appendChild(el("text", { x: x(i), y: h - bottom + 18, class: "label", "text-anchor": "middle" }, label));
      }
    });
    series.forEach((line, k) => {
      const points = line.values.map((v, i) => `${x(i).toFixed(1)},${s.y(v).toFixed(1)}`).join(" ");
      const g = el("g", { class: `series s${k % 8}${line.strong ? " strong" : ""}`, "data-key": line.key });
      const p = el("polyline", { points, fill: "none" });
      p.appendChild(el("title", {}, line.label));
      g.appendChild(p);
      line.values.forEach((v, i) => {
        const c = el("circle", { cx: x(i), cy: s.y(v), r: line.strong ? 3 : 2, "data-x": opts.xs[i], "data-value": v });
        c.appendChild(el("title", {}, `${line.label}, ${opts.xs[i]}: ${opts.format(v)}`));
        g.appendChild(c);
      });
      svg.appendChild(g);
    });
    return svg;
  }

  window.TallyCharts = { bars, lines };
})();
