// Small SVG charts over time, written for voxgate: stacked bars (counts per bucket) and lines (rates,
// latencies). Each chart is a <figure> with a caption, a text summary for screen readers, a legend
// that does not rely on colour alone (line dashes, labels) and the numbers as a data table.

import { day, h, s, shortTime, uid } from "./dom.js";

const M = { top: 14, right: 18, bottom: 42, left: 60 };

/** Colours with at least 3:1 contrast on white; lines also differ by dash pattern. */
export const COLORS = {
  resolved: "#17693a",
  escalated: "#c2410c",
  abandoned: "#6d3fc0",
  unengaged: "#6b7280",
  blue: "#1a5fb4",
  orange: "#c2410c",
  green: "#17693a",
  purple: "#6d3fc0",
};
const DASHES = ["", "7 4", "2 3", "10 3 2 3"];

function niceStep(max, ticks, integer) {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  return integer ? Math.max(1, Math.round(step)) : step;
}

function bucketName(seconds) {
  if (seconds % 86400 === 0) return seconds === 86400 ? "day" : `${seconds / 86400} days`;
  if (seconds % 3600 === 0) return seconds === 3600 ? "hour" : `${seconds / 3600} hours`;
  return `${Math.round(seconds / 60)} minutes`;
}

function timeLabel(date, bucketS, withDate) {
  return bucketS >= 86400 ? day(date) : shortTime(date, withDate);
}

/**
 * A chart over time.
 *   points:  [{start: ISO time, ...}] — contiguous buckets, oldest first
 *   series:  [{label, value: (point) → number|null, color}]
 *   kind:    "stacked-bar" | "line"
 *   format:  number → text for axis ticks, tooltips and the table
 */
export function timeChart({ name, title, points, bucketS, series, kind = "line", format = String, yMax,
                            integer = false, yLabel = "", width = 1000, height = 260, emptyTop }) {
  const W = width;
  const H = height;
  const captionId = uid("chart-title");
  const summaryId = uid("chart-summary");
  const times = points.map((p) => new Date(p.start));
  const values = series.map((sr) => points.map((p) => {
    const v = sr.value(p);
    return v === null || v === undefined || Number.isNaN(v) ? null : v;
  }));
  const n = points.length;
  const totals = points.map((_, i) => values.reduce((sum, vs) => sum + (vs[i] || 0), 0));
  const dataMax = kind === "stacked-bar" ? Math.max(0, ...totals)
    : Math.max(0, ...values.flat().filter((v) => v !== null));
  let top = yMax ?? dataMax;
  if (!(top > 0)) top = emptyTop ?? (integer ? 4 : 1);
  const step = niceStep(top, 4, integer);
  top = Math.ceil(top / step - 1e-9) * step;

  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const band = n ? pw / n : pw;
  const y = (v) => M.top + ph - (v / top) * ph;
  const xc = (i) => M.left + band * i + band / 2;

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": captionId,
    "aria-describedby": summaryId, focusable: "false", "data-chart": name });

  // horizontal grid and y axis
  const grid = s("g", { class: "grid" });
  const yAxis = s("g", { class: "axis y" });
  for (let v = 0; v <= top + step / 1000; v += step) {
    grid.append(s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    yAxis.append(s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  svg.append(grid, yAxis);
  if (yLabel) {
    svg.append(s("text", { class: "axis", x: 14, y: M.top + ph / 2, transform: `rotate(-90 14 ${M.top + ph / 2})`,
      "text-anchor": "middle" }, yLabel));
  }

  // time axis: at most ~8 labels; the date is shown where it changes
  const xAxis = s("g", { class: "axis x" });
  xAxis.append(s("line", { x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph }));
  const every = Math.max(1, Math.ceil(n / Math.max(3, Math.floor(pw / 95))));
  const spansDays = n > 0 && times[0].toDateString() !== times[n - 1].toDateString();
  let lastDate = "";
  for (let i = 0; i < n; i += every) {
    const date = times[i];
    const dateKey = date.toDateString();
    const label = timeLabel(date, bucketS, spansDays && (i === 0 || dateKey !== lastDate));
    lastDate = dateKey;
    xAxis.append(s("line", { x1: xc(i), x2: xc(i), y1: M.top + ph, y2: M.top + ph + 4 }));
    xAxis.append(s("text", { x: xc(i), y: M.top + ph + 17, "text-anchor": "middle" }, label));
  }
  xAxis.append(s("text", { x: M.left + pw / 2, y: H - 4, "text-anchor": "middle" },
    `Time (your time zone), one ${bucketName(bucketS)} per ${kind === "stacked-bar" ? "bar" : "point"}`));
  svg.append(xAxis);

  // the data
  const marks = s("g", { class: "marks" });
  if (kind === "stacked-bar") {
    for (let i = 0; i < n; i += 1) {
      let base = 0;
      const g = s("g", { "data-total": totals[i] });
      series.forEach((sr, k) => {
        const v = values[k][i] || 0;
        if (v > 0) {
          g.append(s("rect", { x: M.left + band * i + band * 0.14, width: Math.max(1, band * 0.72),
            y: y(base + v), height: Math.max(0.5, y(base) - y(base + v)), fill: sr.color },
          s("title", {}, `${timeLabel(times[i], bucketS, true)}: ${sr.label} ${format(v)}`)));
        }
        base += v;
      });
      marks.append(g);
    }
  } else {
    series.forEach((sr, k) => {
      let d = "";
      let pen = false;
      values[k].forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${xc(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
        marks.append(s("circle", { cx: xc(i), cy: y(v), r: 3.2, fill: sr.color },
          s("title", {}, `${timeLabel(times[i], bucketS, true)}: ${sr.label} ${format(v)}`)));
      });
      if (d) marks.prepend(s("path", { d, fill: "none", stroke: sr.color, "stroke-width": 2.2,
        "stroke-dasharray": DASHES[k % DASHES.length] || null }));
    });
  }
  svg.append(marks);

  const legend = h("ul", { class: "legend" }, series.map((sr, k) => h("li", {},
    s("svg", { viewBox: "0 0 22 12", "aria-hidden": "true", focusable: "false" }, kind === "stacked-bar"
      ? s("rect", { x: 3, y: 1, width: 16, height: 10, fill: sr.color })
      : s("line", { x1: 1, x2: 21, y1: 6, y2: 6, stroke: sr.color, "stroke-width": 3,
        "stroke-dasharray": DASHES[k % DASHES.length] || null })),
    sr.label)));

  const rows = points.map((p, i) => ({ i, p }));
  const head = ["Time", ...series.map((sr) => sr.label), ...(kind === "stacked-bar" ? ["Total"] : [])];
  const dataTable = h("table", { "data-chart-table": name },
    h("caption", { class: "sr-only" }, `${title}: the numbers`),
    h("thead", {}, h("tr", {}, head.map((label, k) => h("th", { scope: "col", class: k ? "num" : null }, label)))),
    h("tbody", {}, rows.map(({ i }) => h("tr", {},
      h("th", { scope: "row" }, timeLabel(times[i], bucketS, true)),
      series.map((_, k) => h("td", { class: "num" }, values[k][i] === null ? "—" : format(values[k][i]))),
      kind === "stacked-bar" ? h("td", { class: "num" }, format(totals[i])) : null))));

  return h("figure", { class: "chart", "data-chart-figure": name },
    h("figcaption", { id: captionId }, title),
    h("p", { id: summaryId, class: "sr-only" }, summarise({ title, times, bucketS, series, values, totals, kind, format })),
    svg, legend,
    h("details", { class: "data-table" }, h("summary", {}, `Show the numbers as a table`), dataTable));
}

function summarise({ title, times, bucketS, series, values, totals, kind, format }) {
  const n = times.length;
  if (!n) return `${title}: no data.`;
  const span = `from ${timeLabel(times[0], bucketS, true)} to ${timeLabel(times[n - 1], bucketS, true)}, one ${bucketName(bucketS)} per ${kind === "stacked-bar" ? "bar" : "point"}`;
  const parts = series.map((sr, k) => {
    const vs = values[k];
    const present = vs.map((v, i) => [v, i]).filter(([v]) => v !== null);
    if (!present.length) return `${sr.label}: no data`;
    const [maxV, maxI] = present.reduce((a, b) => (b[0] > a[0] ? b : a));
    if (kind === "stacked-bar") {
      const sum = present.reduce((acc, [v]) => acc + v, 0);
      return `${sr.label}: ${format(sum)} in all, at most ${format(maxV)} at ${timeLabel(times[maxI], bucketS, true)}`;
    }
    const [lastV, lastI] = present[present.length - 1];
    return `${sr.label}: latest ${format(lastV)} at ${timeLabel(times[lastI], bucketS, true)}, highest ${format(maxV)}`;
  });
  const total = kind === "stacked-bar" ? ` Total ${format(totals.reduce((a, b) => a + b, 0))}.` : "";
  return `${title}, ${span}. ${parts.join("; ")}.${total}`;
}
