// Time-series charts over uPlot (web/vendor, MIT): one small line chart per figure, sized to its box
// and redrawn when the box changes width (phone or desktop). Values the API does not have are gaps.
"use strict";

(function () {
  const GP = window.GP;
  const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#39c5cf", "#ff7b72", "#e3b341"];
  GP.COLORS = COLORS;

  // A chart in `box`: `series` are [{label}], `data` is [xs, ys1, ys2, …] with xs in unix seconds.
  GP.chart = function chart(box, title, unit, series, data, opts = {}) {
    const wrap = GP.el("figure.chart", {}, GP.el("figcaption", {}, title + (unit ? " (" + unit + ")" : "")));
    const plotBox = GP.el("div", { role: "img", "aria-label": title + ": chart of the last hour" });
    wrap.appendChild(plotBox);
    box.appendChild(wrap);
    if (typeof window.uPlot !== "function") { plotBox.textContent = "charts unavailable"; return { update() {} }; }
    const axis = { stroke: "#aab2bf", grid: { stroke: "#262a33" }, ticks: { stroke: "#262a33" } };
    const options = {
      width: Math.max(200, plotBox.clientWidth || box.clientWidth || 300),
      height: opts.height || 150,
      legend: { show: series.length > 1 || !!opts.legend },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: opts.time !== false }, y: opts.yRange ? { range: opts.yRange } : {} },
      axes: [Object.assign({}, axis), Object.assign({ size: 50 }, axis)],
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 2, spanGaps: false,
        fill: series.length === 1 ? (s.color || COLORS[0]) + "22" : undefined,
        paths: opts.bars && window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
        points: { show: opts.bars ? false : undefined },
      }))),
    };
    const plot = new window.uPlot(options, data, plotBox);
    const resize = new ResizeObserver(() => {
      const width = Math.max(200, plotBox.clientWidth);
      if (width !== plot.width) plot.setSize({ width, height: options.height });
    });
    resize.observe(plotBox);
    GP.cleanup.push(() => { resize.disconnect(); plot.destroy(); });
    return { plot, update: (next) => plot.setData(next) };
  };

  // Columns for uPlot from points [{ts, …}] and a reader per series.
  GP.columns = function columns(points, readers) {
    return [points.map((p) => p.ts)].concat(readers.map((read) => points.map((p) => {
      const v = read(p);
      return v === null || v === undefined || Number.isNaN(v) ? null : v;
    })));
  };
})();
