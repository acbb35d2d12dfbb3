"use strict";
// Small SVG charts for the dashboard: stacked areas and bars over time buckets, stepped lines,
// and dots. Integer axes get integer ticks; every time axis is the same window, labelled in
// the browser's local time.
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 190, M = { l: 46, r: 12, t: 10, b: 28 };
  const PW = W - M.l - M.r, PH = H - M.t - M.b;
  const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

  function el(name, attrs, parent, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function nice(x, integer) {
    if (!(x > 0)) return 1;
    const mag = Math.pow(10, Math.floor(Math.log10(x)));
    const f = x / mag;
    const m = f <= 1 ? 1 : f <= 2 ? 2 : (f <= 2.5 && !integer) ? 2.5 : f <= 5 ? 5 : 10;
    const step = m * mag;
    return integer ? Math.max(1, Math.round(step)) : step;
  }

  // 0, step, 2*step ... up to the first tick at or above max (about four intervals).
  function yTicks(max, integer) {
    if (!(max > 0)) max = integer ? 1 : 1;
    const step = nice(max / 4, integer);
    const top = Math.max(step, Math.ceil(max / step - 1e-9) * step);
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toFixed(6)));
    return ticks;
  }

  function fmtNumber(v) {
    if (v === 0) return "0";
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(Math.abs(v) >= 10000 ? 0 : 1) + "k";
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) < 1 ? v.toFixed(2).replace(/0$/, "") : v.toFixed(1).replace(/\.0$/, "");
  }

  function two(n) { return String(n).padStart(2, "0"); }
  function clock(t, seconds) {
    const d = new Date(t * 1000);
    return two(d.getHours()) + ":" + two(d.getMinutes()) + (seconds ? ":" + two(d.getSeconds()) : "");
  }

  function frame(container, spec, ymax) {
    container.replaceChildren();
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title || "chart" }, container);
    const ticks = yTicks(ymax, spec.integer);
    const top = ticks[ticks.length - 1];
    const y = v => M.t + PH - (v / top) * PH;
    const x0 = spec.start, span = spec.n * spec.step;
    const x = t => M.l + ((t - x0) / span) * PW;
    for (const v of ticks) {
      el("line", { x1: M.l, x2: W - M.r, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }, svg);
      el("text", { x: M.l - 5, y: y(v) + 3, "text-anchor": "end" }, svg, fmtNumber(v));
    }
    const tstep = TIME_STEPS.find(s => span / s <= 6) || TIME_STEPS[TIME_STEPS.length - 1];
    for (let t = Math.ceil(x0 / tstep) * tstep; t <= x0 + span + 1e-6; t += tstep) {
      el("line", { x1: x(t), x2: x(t), y1: M.t + PH, y2: M.t + PH + 4, class: "axis" }, svg);
      const anchor = x(t) > W - M.r - 22 ? "end" : x(t) < M.l + 22 ? "start" : "middle";
      el("text", { x: x(t), y: H - 10, "text-anchor": anchor }, svg, clock(t, tstep < 60));
    }
    el("line", { x1: M.l, x2: M.l, y1: M.t, y2: M.t + PH, class: "axis" }, svg);
    if (spec.yLabel) {
      el("text", { x: 10, y: M.t + PH / 2, transform: `rotate(-90 10 ${M.t + PH / 2})`, "text-anchor": "middle" },
        svg, spec.yLabel);
    }
    return { svg, x, y, top };
  }

  function noData(svg, text) {
    el("text", { x: M.l + PW / 2, y: M.t + PH / 2, "text-anchor": "middle", class: "nodata" }, svg, text);
  }

  function stackedTotals(series, n) {
    const sums = new Array(n).fill(0);
    for (const s of series) s.values.forEach((v, i) => { sums[i] += v || 0; });
    return sums;
  }

  // A transparent column per bucket whose tooltip lists every series' value in it.
  function bucketTitles(g, spec, x, fmt) {
    for (let i = 0; i < spec.n; i++) {
      const parts = spec.series.filter(s => s.values[i]).map(s => `${s.name} ${fmt(s.values[i])}`);
      const t = spec.start + i * spec.step;
      const r = el("rect", { x: x(t), y: M.t, width: Math.max(1, x(t + spec.step) - x(t)), height: PH,
        fill: "transparent" }, g);
      el("title", {}, r, `${clock(t, true)}–${clock(t + spec.step, true)}: ${parts.join(", ") || "none"}`);
    }
  }

  function stacked(container, spec, kind) {
    const sums = stackedTotals(spec.series, spec.n);
    const { svg, x, y } = frame(container, spec, Math.max(0, ...sums));
    const fmt = spec.format || fmtNumber;
    let marks = 0;
    const base = new Array(spec.n).fill(0);
    for (const s of spec.series) {
      if (!s.values.some(v => v)) continue;
      if (kind === "bars") {
        s.values.forEach((v, i) => {
          if (!v) return;
          const t = spec.start + i * spec.step;
          const x1 = x(t), x2 = x(t + spec.step);
          el("rect", { x: x1 + 0.5, width: Math.max(1, x2 - x1 - 1), y: y(base[i] + v), height: y(base[i]) - y(base[i] + v),
            fill: s.color, "data-series": s.name }, svg);
          base[i] += v;
          marks++;
        });
      } else {
        let upper = "", lower = "";
        for (let i = 0; i < spec.n; i++) {
          const t = spec.start + i * spec.step, v = s.values[i] || 0;
          upper += `${i ? "L" : "M"}${x(t).toFixed(1)},${y(base[i] + v).toFixed(1)}L${x(t + spec.step).toFixed(1)},${y(base[i] + v).toFixed(1)}`;
          lower = `L${x(t + spec.step).toFixed(1)},${y(base[i]).toFixed(1)}L${x(t).toFixed(1)},${y(base[i]).toFixed(1)}` + lower;
          base[i] += v;
        }
        el("path", { d: upper + lower + "Z", fill: s.color, "fill-opacity": 0.85, stroke: s.color, "stroke-width": 0.5,
          "data-series": s.name }, svg);
        marks++;
      }
    }
    if (!marks) noData(svg, spec.empty || "nothing in this window");
    bucketTitles(el("g", {}, svg), spec, x, fmt);
    container.dataset.marks = String(marks);
    return marks;
  }

  function line(container, spec) {
    const values = spec.series.flatMap(s => s.values.filter(v => v !== null && v !== undefined));
    const { svg, x, y } = frame(container, spec, Math.max(0, spec.limit || 0, ...values));
    if (spec.limit) {
      el("line", { x1: M.l, x2: W - M.r, y1: y(spec.limit), y2: y(spec.limit), stroke: "#c4221a",
        "stroke-dasharray": "4 3" }, svg);
      el("text", { x: W - M.r - 2, y: y(spec.limit) - 3, "text-anchor": "end" }, svg, `limit ${spec.limit}`);
    }
    let marks = 0;
    for (const s of spec.series) {
      let d = "", open = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { open = false; return; }
        const t = spec.start + i * spec.step;
        d += `${open ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}L${x(t + spec.step).toFixed(1)},${y(v).toFixed(1)}`;
        open = true;
        marks++;
      });
      if (d) el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name }, svg);
    }
    if (!marks) noData(svg, spec.empty || "no samples in this window yet");
    bucketTitles(el("g", {}, svg), spec, x, spec.format || fmtNumber);
    container.dataset.marks = String(marks);
    return marks;
  }

  function dots(container, spec) {
    const { svg, x, y } = frame(container, spec, Math.max(0, ...spec.points.map(p => p.y)));
    for (const p of spec.points) {
      const c = el("circle", { cx: x(p.t), cy: y(p.y), r: 3.5, fill: p.color, "fill-opacity": 0.8, stroke: "#fff",
        "stroke-width": 0.5 }, svg);
      el("title", {}, c, p.label);
    }
    if (!spec.points.length) noData(svg, spec.empty || "no recovery finished in this window");
    container.dataset.marks = String(spec.points.length);
    return spec.points.length;
  }

  function render(container, spec) {
    if (spec.kind === "area" || spec.kind === "bars") return stacked(container, spec, spec.kind);
    if (spec.kind === "line") return line(container, spec);
    return dots(container, spec);
  }

  function legend(container, items) {
    container.replaceChildren(...items.map(it => {
      const span = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = it.color;
      span.append(sw, document.createTextNode(it.text));
      return span;
    }));
  }

  return { render, legend, yTicks, clock, fmtNumber };
})();
