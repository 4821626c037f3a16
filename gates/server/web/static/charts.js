// mlgate: charts of the experiment and run pages. Data comes from <script id="trk-chart-data">
// (JSON prepared and downsampled by the server); metric histories are drawn with uPlot, the
// scatter plot and the parallel coordinates as plain SVG. No inline code, no inline styles.
(function () {
  "use strict";
  var PALETTE = ["#2457c5", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#c2255c",
    "#5c940d", "#1864ab", "#862e9c", "#e67700", "#087f5b", "#a61e4d", "#364fc7", "#66a80f",
    "#495057", "#f08c00", "#0b7285", "#9c36b5", "#c92a2a"];
  var SVG = "http://www.w3.org/2000/svg";

  function readData() {
    var node = document.getElementById("trk-chart-data");
    if (!node) return null;
    try { return JSON.parse(node.textContent || "null"); } catch (e) { return null; }
  }

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function message(container, text) {
    var p = document.createElement("p");
    p.className = "trk-chart-message";
    p.textContent = text;
    container.appendChild(p);
  }

  function runColors(data) {
    // One color per run, the same in every chart of the page (order of first appearance).
    var colors = {};
    var n = 0;
    function add(id) { if (id && !(id in colors)) colors[id] = color(n++); }
    document.querySelectorAll("[data-run-index]").forEach(function (chip) {
      var href = chip.getAttribute("href") || "";
      add(href.split("/").pop());
    });
    (data.metrics || []).forEach(function (c) { c.series.forEach(function (s) { add(s.run_id); }); });
    if (data.parallel) data.parallel.runs.forEach(function (r) { add(r.run_id); });
    return colors;
  }

  // --- metric histories (uPlot) -----------------------------------------------------------

  // The x axis modes: by step, by wall-clock time (uPlot's time scale wants seconds), or by
  // seconds since the run started. The server sends every point's step and time.
  var X_MODES = {
    step: { label: "step", time: false, x: function (s, i) { return s.x[i]; } },
    wall: { label: "time", time: true, x: function (s, i) { return (s.t0 + s.t[i]) / 1000; } },
    relative: {
      label: "seconds since run start",
      time: false,
      x: function (s, i) { return (s.t0 + s.t[i] - s.start) / 1000; },
    },
  };

  function aligned(chart, mode) {
    // uPlot wants one shared, sorted x array: the union of every series' x values, nulls
    // where a series has no point. Two points of one series at the same x keep the last.
    var pick = X_MODES[mode].x;
    var seen = {};
    var xs = [];
    chart.series.forEach(function (s) {
      for (var i = 0; i < s.x.length; i++) {
        var x = pick(s, i);
        if (!(x in seen)) { seen[x] = true; xs.push(x); }
      }
    });
    xs.sort(function (a, b) { return a - b; });
    var index = {};
    xs.forEach(function (x, i) { index[x] = i; });
    var out = [xs];
    chart.series.forEach(function (s) {
      var ys = new Array(xs.length).fill(null);
      for (var i = 0; i < s.x.length; i++) ys[index[pick(s, i)]] = s.y[i];
      out.push(ys);
    });
    return out;
  }

  function drawMetric(container, chart, colors, mode) {
    var target = container.querySelector(".trk-plot") || container;
    var width = Math.max(280, target.clientWidth || container.clientWidth - 16);
    var spec = X_MODES[mode] || X_MODES.step;
    var series = [{ label: spec.label }];
    chart.series.forEach(function (s) {
      series.push({
        label: s.label,
        stroke: colors[s.run_id] || color(series.length - 1),
        width: 1.5,
        spanGaps: true,
        points: { show: s.x.length <= 30 },
      });
    });
    var plot = new window.uPlot({
      width: width,
      height: 240,
      scales: { x: { time: spec.time } },
      series: series,
      axes: [{ label: spec.label }, {}],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    }, aligned(chart, mode), target);
    container.setAttribute("data-x-mode", mode);
    return { plot: plot, target: target, container: container, chart: chart };
  }

  // --- SVG helpers ----------------------------------------------------------------------------

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, content, attrs) {
    var node = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    node.textContent = content;
    return node;
  }

  function title(parent, content) {
    var node = el("title", {}, parent);
    node.textContent = content;
  }

  function ticks(min, max, count) {
    if (min === max) return [min];
    var span = max - min;
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = (count * step) / span;
    if (err <= 0.15) step *= 10; else if (err <= 0.35) step *= 5; else if (err <= 0.75) step *= 2;
    var out = [];
    for (var v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  function fmt(v) {
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Math.round(v * 1e4) / 1e4);
  }

  function scale(min, max, lo, hi) {
    if (min === null || max === null) return function () { return (lo + hi) / 2; };
    if (min === max) { min -= 0.5; max += 0.5; }
    return function (v) { return lo + ((v - min) / (max - min)) * (hi - lo); };
  }

  function hostOf(container) { return container.querySelector(".trk-svg") || container; }

  function widthOf(container, least) {
    return Math.max(least, Math.floor(hostOf(container).clientWidth || 0));
  }

  function svgFor(container, width, height) {
    // Drawn at the container's own width, so text keeps its size (no scaling of the picture).
    var svg = el("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img" });
    hostOf(container).appendChild(svg);
    return svg;
  }

  // --- scatter --------------------------------------------------------------------------------

  function drawScatter(container, data, colors) {
    var points = data.points;
    if (!points.length) { message(container, "No run has a number for both axes."); return; }
    var W = Math.min(widthOf(container, 420), 1100), H = 380, L = 64, R = 16, T = 24, B = 44;
    var svg = svgFor(container, W, H);
    var xs = points.map(function (p) { return p.x; });
    var ys = points.map(function (p) { return p.y; });
    var xmin = Math.min.apply(null, xs), xmax = Math.max.apply(null, xs);
    var ymin = Math.min.apply(null, ys), ymax = Math.max.apply(null, ys);
    var sx = scale(xmin, xmax, L, W - R), sy = scale(ymin, ymax, H - B, T);
    var axes = el("g", { class: "axis" }, svg);
    ticks(xmin, xmax, 6).forEach(function (v) {
      var x = sx(v);
      el("line", { class: "grid", x1: x, x2: x, y1: T, y2: H - B }, svg);
      text(axes, x, H - B + 16, fmt(v), { "text-anchor": "middle" });
    });
    ticks(ymin, ymax, 5).forEach(function (v) {
      var y = sy(v);
      el("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }, svg);
      text(axes, L - 6, y + 4, fmt(v), { "text-anchor": "end" });
    });
    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }, axes);
    el("line", { x1: L, x2: L, y1: T, y2: H - B }, axes);
    text(svg, (L + W - R) / 2, H - 6, data.x.kind + ": " + data.x.key, { class: "axis-title", "text-anchor": "middle" });
    text(svg, L, T - 10, data.y.key, { class: "axis-title" });
    points.forEach(function (p) {
      var link = el("a", { href: "/runs/" + encodeURIComponent(p.run_id) }, svg);
      var dot = el("circle", { class: "dot", cx: sx(p.x), cy: sy(p.y), r: 5, fill: colors[p.run_id] || color(0) }, link);
      dot.setAttribute("data-run-id", p.run_id);
      title(dot, p.label + "\n" + data.x.key + " = " + fmt(p.x) + "\n" + data.y.key + " = " + fmt(p.y));
    });
  }

  // --- parallel coordinates -------------------------------------------------------------------

  function drawParallel(container, data, colors) {
    var axes = data.axes;
    if (!axes.length || !data.runs.length) { message(container, "Nothing to draw."); return; }
    var W = Math.max(widthOf(container, 480), 120 * axes.length), H = 380, T = 40, B = 30, L = 60, R = 80;
    var svg = svgFor(container, W, H);
    var step = axes.length > 1 ? (W - L - R) / (axes.length - 1) : 0;
    var positions = axes.map(function (axis, i) {
      var x = axes.length > 1 ? L + i * step : W / 2;
      var toY;
      if (axis.type === "category") {
        var n = axis.categories.length;
        toY = function (v) {
          var k = axis.categories.indexOf(v);
          if (k < 0) return null;
          return n === 1 ? (T + H - B) / 2 : H - B - (k / (n - 1)) * (H - B - T);
        };
      } else {
        var s = scale(axis.min, axis.max, H - B, T);
        toY = function (v) { return v === null || v === undefined ? null : s(v); };
      }
      return { x: x, y: toY };
    });
    data.runs.forEach(function (run) {
      var paths = [];
      var current = [];
      run.values.forEach(function (v, i) {
        var y = v === null ? null : positions[i].y(v);
        if (y === null) { if (current.length) paths.push(current); current = []; return; }
        current.push(positions[i].x.toFixed(1) + "," + y.toFixed(1));
      });
      if (current.length) paths.push(current);
      var group = el("g", { "data-run-id": run.run_id }, svg);
      paths.forEach(function (pts) {
        var line = pts.length === 1
          ? el("circle", { class: "pc-line", cx: pts[0].split(",")[0], cy: pts[0].split(",")[1], r: 3, fill: colors[run.run_id] || color(0) }, group)
          : el("polyline", { class: "pc-line", points: pts.join(" "), stroke: colors[run.run_id] || color(0) }, group);
        title(line, run.label);
      });
    });
    axes.forEach(function (axis, i) {
      var g = el("g", { class: "axis" }, svg);
      var x = positions[i].x;
      el("line", { x1: x, x2: x, y1: T, y2: H - B }, g);
      text(g, x, T - 22, axis.name, { class: "axis-title", "text-anchor": "middle" });
      text(g, x, T - 9, axis.kind + (axis.type === "category" ? " (text)" : ""), { "text-anchor": "middle" });
      if (axis.type === "category") {
        axis.categories.forEach(function (c) { text(g, x + 5, positions[i].y(c) + 4, c); });
      } else if (axis.min !== null) {
        text(g, x + 5, H - B + 4, fmt(axis.min));
        if (axis.max !== axis.min) text(g, x + 5, T + 4, fmt(axis.max));
      } else {
        text(g, x + 5, (T + H - B) / 2, "no values");
      }
    });
  }

  // --- wiring ---------------------------------------------------------------------------------

  function main() {
    var data = readData();
    if (!data) return;
    var colors = runColors(data);
    document.querySelectorAll("[data-run-index]").forEach(function (chip) {
      var id = (chip.getAttribute("href") || "").split("/").pop();
      if (colors[id]) chip.style.borderLeftColor = colors[id];
    });
    var plots = [];
    // A reload may restore a radio other than the default: start from the one checked.
    var checked = document.querySelector('input[name="trk-x-axis"]:checked');
    var mode = checked && X_MODES[checked.value] ? checked.value : "step";
    document.querySelectorAll('[data-testid="metric-chart"]').forEach(function (container) {
      var chart = (data.metrics || [])[Number(container.getAttribute("data-index"))];
      if (!chart) return;
      if (typeof window.uPlot !== "function") {
        message(container.querySelector(".trk-plot") || container,
          "Charts need uPlot, which is not built: run `make assets`.");
        return;
      }
      plots.push(drawMetric(container, chart, colors, mode));
    });
    document.querySelectorAll('input[name="trk-x-axis"]').forEach(function (radio) {
      radio.addEventListener("change", function () {
        if (!radio.checked || !X_MODES[radio.value]) return;
        mode = radio.value;
        plots = plots.map(function (p) {
          p.plot.destroy();
          return drawMetric(p.container, p.chart, colors, mode);
        });
      });
    });
    var scatter = document.querySelector('[data-testid="scatter-chart"]');
    if (scatter && data.scatter && scatter.tagName === "FIGURE") drawScatter(scatter, data.scatter, colors);
    var parallel = document.querySelector('[data-testid="parallel-chart"]');
    if (parallel && data.parallel && parallel.tagName === "FIGURE") drawParallel(parallel, data.parallel, colors);
    var pending = null;
    window.addEventListener("resize", function () {
      if (pending) window.clearTimeout(pending);
      pending = window.setTimeout(function () {
        plots.forEach(function (p) {
          p.plot.setSize({ width: Math.max(280, p.target.clientWidth), height: 240 });
        });
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
