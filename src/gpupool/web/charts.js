// Time-series charts over uPlot (web/vendor, MIT): one small line chart per figure, sized to its box
// and redrawn when the box changes width (phone or desktop). Values the API does not have are gaps.
"use strict";

(function () {
  const GP = window.GP;
  const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#39c5cf", "#ff7b72", "#e3b341"];
  GP.COLORS = COLORS;

  // A chart in `box`: `series` are [{label}], `data` is [xs, ys1, ys2, …] with xs in unix seconds.
  GP.chart = function chart(box, title, unit, series, data, opts = {}) {
    const latest = GP.el("b.latest");
    const wrap = GP.el("figure.chart", {}, GP.el("figcaption", {}, title + (unit ? " (" + unit + ")" : "") + " · now ", latest));
    const plotBox = GP.el("div", { role: "img", "aria-label": title + ": chart of the last hour" });
    wrap.appendChild(plotBox);
    box.appendChild(wrap);
    const showLatest = (cols) => {  // the newest value of each series, in words beside the title
      const values = cols.slice(1).map((ys) => { const v = ys.length ? ys[ys.length - 1] : null; return v === null ? "–" : +v.toFixed(2); });
      latest.textContent = values.join(" · ") + (values.every((v) => v === "–") && opts.none ? " (" + opts.none + ")" : "");
    };
    showLatest(data);
    if (typeof window.uPlot !== "function") { plotBox.textContent = "charts unavailable"; return { update: showLatest }; }
    // A time axis spans at least five minutes, so a young pool's few points sit at the right end.
    // Counted x (epochs): one step of room either side, whole numbers on the axis.
    const counted = (u) => { const xs = u.data[0]; return xs.length ? [xs[0] - 1, xs[xs.length - 1] + 1] : [0, 1]; };
    const recent = (u) => {  // read from the data itself: uPlot's own min/max pads a single point by years
      const xs = u.data[0].filter((x) => x !== null);
      const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
      return [Math.min(xs.length ? xs[0] : hi, hi - 300), hi];
    };
    const xRange = opts.time === false ? counted : recent;
    const axis = { stroke: "#aab2bf", grid: { stroke: "#262a33" }, ticks: { stroke: "#262a33" } };
    const options = {
      width: Math.max(200, plotBox.clientWidth || box.clientWidth || 300),
      height: opts.height || 150,
      legend: { show: series.length > 1 || !!opts.legend },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: opts.time !== false, range: xRange }, y: opts.yRange ? { range: opts.yRange } : {} },
      axes: [Object.assign(opts.time === false ? { values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : "")) } : {}, axis),
        Object.assign({ size: 50 }, axis)],
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 2, spanGaps: false,
        fill: opts.bars ? (s.color || COLORS[0]) + "99" : series.length === 1 ? (s.color || COLORS[0]) + "22" : undefined,
        paths: opts.bars && window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
        points: { show: opts.bars ? false : (u, si) => u.data[0].length < 30, size: 6 },
      }))),
    };
    const plot = new window.uPlot(options, data, plotBox);
    const resize = new ResizeObserver(() => {
      const width = Math.max(200, plotBox.clientWidth);
      if (width !== plot.width) plot.setSize({ width, height: options.height });
    });
    resize.observe(plotBox);
    GP.cleanup.push(() => { resize.disconnect(); plot.destroy(); });
    return { plot, update: (next) => { plot.setData(next); showLatest(next); } };
  };

  // Columns for uPlot from points [{ts, …}] and a reader per series.
  GP.columns = function columns(points, readers) {
    return [points.map((p) => p.ts)].concat(readers.map((read) => points.map((p) => {
      const v = read(p);
      return v === null || v === undefined || Number.isNaN(v) ? null : v;
    })));
  };
})();
