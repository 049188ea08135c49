// Analytics over time: sessions by outcome, escalation and resolution rates, voice-to-voice latency,
// per time bucket, with the KPIs of the whole period; computed by the server from stored sessions.

import { api } from "../api.js";
import { COLORS, timeChart } from "../chart.js";
import { clear, field, h, message, ms, pct, select, table } from "../dom.js";
import { bundleIndex } from "./shared.js";

const PERIODS = [["1h", "last hour", "5m"], ["6h", "last 6 hours", "15m"], ["24h", "last 24 hours", "1h"],
  ["7d", "last 7 days", "6h"], ["30d", "last 30 days", "1d"]];
const BUCKETS = [["", "automatic"], ["5m", "5 minutes"], ["15m", "15 minutes"], ["1h", "1 hour"], ["6h", "6 hours"], ["1d", "1 day"]];

function kpi(name, label, value, note) {
  return h("div", { class: "kpi", "data-kpi": name }, h("dt", {}, label),
    h("dd", {}, h("span", { class: "value" }, value), note ? [" ", h("small", {}, note)] : null));
}

function topTable(caption, rows, what) {
  return table({ caption, empty: `No ${what} yet.`, rows: rows.map(([name, n]) => ({ name, n })),
    columns: [{ label: what[0].toUpperCase() + what.slice(1), value: (r) => r.name }, { label: "Count", value: (r) => r.n, num: true }] });
}

export default {
  path: "analytics",
  title: "Analytics",
  read: "analytics.read",
  async render(view, ctx, params, query) {
    const names = ctx.envsWhere("analytics.read");
    const index = await bundleIndex(ctx);
    const env = select(names, query.get("env") || (names.includes(ctx.worker) ? ctx.worker : names[0]));
    const agent = index.agents.length ? select([["", "every agent"], ...index.agents.map((a) => [a, a])], query.get("agent") || "")
      : h("input", { type: "text", size: 16, value: query.get("agent") || "" });
    const period = select(PERIODS.map(([v, l]) => [v, l]), query.get("since") || "24h");
    const bucket = select(BUCKETS, "");
    const button = h("button", { type: "submit" }, "Refresh");
    const body = h("div", {});
    const status = h("p", { class: "sr-only", role: "status" });

    const load = async () => {
      button.disabled = true;
      try {
        const chosen = bucket.value || PERIODS.find(([v]) => v === period.value)[2];
        const data = await api("/api/stats/series", { query: { env: env.value, agent: agent.value.trim(),
          since: period.value, bucket: chosen } });
        clear(body);
        const t = data.totals;
        const o = t.outcomes;
        body.append(h("dl", { class: "kpis", "aria-label": "Key figures for the period" },
          kpi("sessions", "Sessions", String(t.sessions), `${t.ended} ended`),
          kpi("resolved", "Resolved", String(o.resolved || 0), pct(t.resolution_rate)),
          kpi("escalated", "Escalated", String(o.escalated || 0), pct(t.escalation_rate)),
          kpi("abandoned", "Abandoned", String(o.abandoned || 0), pct(t.abandon_rate)),
          kpi("completion", "Completion rate", pct(t.completion_rate)),
          kpi("engagement", "Engagement", pct(t.engagement_rate), `${o.unengaged || 0} unengaged`),
          kpi("latency", "Voice-to-voice p95", ms(t.voice_to_voice_ms?.p95), t.voice_to_voice_ms?.n ? `${t.voice_to_voice_ms.n} turns` : "no voice turns"),
          kpi("handle", "Median handle time", t.handle_time_s?.p50 === null || t.handle_time_s?.p50 === undefined ? "—" : `${Math.round(t.handle_time_s.p50)} s`)));
        const points = data.points;
        body.append(
          timeChart({ name: "outcomes", title: "Sessions by outcome", points, bucketS: data.bucket_s, kind: "stacked-bar",
            integer: true, yLabel: "sessions", format: (v) => String(Math.round(v)),
            series: ["resolved", "escalated", "abandoned", "unengaged"].map((k) => ({ label: k, color: COLORS[k],
              value: (p) => p.outcomes[k] || 0 })).concat([{ label: "in progress", color: "#9db4d8",
              value: (p) => p.sessions - p.ended }]) }),
          h("div", { class: "grid2" },
            timeChart({ name: "rates", title: "Escalation and resolution rate", points, bucketS: data.bucket_s, kind: "line",
              width: 560, height: 280,
              yMax: 1, yLabel: "% of engaged", format: (v) => pct(v),
              series: [{ label: "escalation rate", color: COLORS.orange, value: (p) => p.escalation_rate },
                { label: "resolution rate", color: COLORS.green, value: (p) => p.resolution_rate }] }),
            timeChart({ name: "latency", title: "Voice-to-voice latency", points, bucketS: data.bucket_s, kind: "line",
              width: 560, height: 280,
              yLabel: "ms", emptyTop: 1000, format: (v) => `${Math.round(v)}`,
              series: [{ label: "p50", color: COLORS.blue, value: (p) => p.voice_p50_ms },
                { label: "p95", color: COLORS.purple, value: (p) => p.voice_p95_ms }] })),
          h("div", { class: "grid2" }, topTable("Top intents", t.top_intents || [], "intents"),
            topTable("Top escalation reasons", t.top_escalation_reasons || [], "escalation reasons")),
        );
        status.textContent = `Showing ${t.sessions} sessions in ${env.value}.`;
      } catch (err) {
        clear(body).append(message(err.message, "error"));
      } finally {
        button.disabled = false;
      }
    };
    const form = h("form", { class: "row panel", "aria-label": "What to show" }, field("Environment", env), field("Agent", agent),
      field("Period", period), field("Bucket", bucket), button);
    form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    view.append(h("p", { class: "lede" }, "Outcomes are defined in docs/operations.md: resolution, escalation and abandon rates ",
      "are over engaged sessions that ended; latency is measured on voice calls, end of the caller's speech to the first reply audio."),
    form, status, body);
    await load();
  },
};
