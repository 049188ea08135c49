// Usage and capacity: calls, minutes, chats, messages and connector calls per environment and
// agent; this worker's capacity, quotas and (for operators) its voice timings.

import { api } from "../api.js";
import { clear, facts, field, h, message, ms, select, table } from "../dom.js";

const PERIODS = [["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]];

export default {
  path: "usage",
  title: "Usage and capacity",
  read: "analytics.read",
  async render(view, ctx) {
    const period = select(PERIODS, "24h");
    const readable = ctx.envsWhere("analytics.read");
    const env = select([...(ctx.canGlobal("analytics.read") ? [["", "every environment"]] : []), ...readable.map((e) => [e, e])],
      ctx.canGlobal("analytics.read") ? "" : (readable.includes(ctx.worker) ? ctx.worker : readable[0]));
    const body = h("div", { "aria-live": "polite" });
    const load = async () => {
      clear(body);
      try {
        const [data, voice] = await Promise.all([api("/api/usage", { query: { since: period.value, env: env.value } }),
          ctx.can("voice.stats", ctx.worker) ? api("/api/voice/stats") : null]);
        const c = data.capacity;
        const quotas = Object.entries(c.quotas || {}).filter(([, v]) => v !== null);
        body.append(h("section", { class: "panel", "aria-labelledby": "cap-h" }, h("h2", { id: "cap-h" }, `Capacity of this worker (${c.environment})`),
          h("dl", { class: "kpis" },
            h("div", { class: "kpi", "data-kpi": "capacity" }, h("dt", {}, "Concurrent call capacity"), h("dd", {}, String(c.worker_capacity))),
            h("div", { class: "kpi", "data-kpi": "active" }, h("dt", {}, "Calls now"), h("dd", {}, String(c.active_calls))),
            h("div", { class: "kpi", "data-kpi": "peak" }, h("dt", {}, "Peak concurrent calls"), h("dd", {}, String(c.peak_concurrent_calls))),
            h("div", { class: "kpi", "data-kpi": "refused" }, h("dt", {}, "Calls refused (busy)"), h("dd", {}, String(c.refused_calls)))),
          facts([["Quotas", quotas.length ? quotas.map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`).join("; ") : "none"]])));
        const rows = data.usage;
        const total = (k) => rows.reduce((a, r) => a + (r[k] || 0), 0);
        body.append(h("section", { "aria-labelledby": "use-h" }, h("h2", { id: "use-h" }, "Usage per environment and agent"),
          table({
            caption: "Usage in the period", hideCaption: true, empty: "No conversations in this period.",
            rows: rows.length ? [...rows, { environment: "all", agent: "total", calls: total("calls"),
              call_minutes: Math.round(total("call_minutes") * 100) / 100, chats: total("chats"), messages: total("messages"),
              connector_calls: total("connector_calls"), peak_concurrent_calls: null }] : [],
            columns: [
              { label: "Environment", key: "environment" }, { label: "Agent", key: "agent" },
              { label: "Voice calls", key: "calls", num: true }, { label: "Call minutes", key: "call_minutes", num: true },
              { label: "Chats", key: "chats", num: true }, { label: "Chat messages", key: "messages", num: true },
              { label: "Connector calls", key: "connector_calls", num: true },
              { label: "Peak concurrent calls", key: "peak_concurrent_calls", num: true },
            ],
          })));
        if (voice) {
          const stages = Object.entries(voice.stages || {});
          body.append(h("section", { "aria-labelledby": "voice-h" }, h("h2", { id: "voice-h" }, "Voice timings on this worker"),
            h("p", {}, `${voice.turns} recent turns; ${voice.interrupted} interrupted by the caller.`),
            table({ caption: "Per-stage timings", hideCaption: true, empty: "No voice turns since the worker started.",
              rows: stages.map(([stage, v]) => ({ stage, ...v })),
              columns: [{ label: "Stage", value: (r) => r.stage.replaceAll("_", " ") }, { label: "Turns", key: "n", num: true },
                { label: "p50", value: (r) => ms(r.p50), num: true }, { label: "p95", value: (r) => ms(r.p95), num: true },
                { label: "max", value: (r) => ms(r.max), num: true }] })));
        }
      } catch (err) {
        body.append(message(err.message, "error"));
      }
    };
    period.addEventListener("change", load);
    env.addEventListener("change", load);
    view.append(h("div", { class: "row" }, field("Environment", env), field("Period", period)), body);
    await load();
  },
};
