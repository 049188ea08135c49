// Environments: the promotion order, tiers, change windows, what is active where, and each
// environment's settings as loaded from environments.yaml (gates, checklist, alert rules, quotas).

import { badge, facts, h, table } from "../dom.js";
import { bundleIndex, environments, version } from "./shared.js";

function windows(env) {
  if (!env.change_windows.length) return "always open (no change windows)";
  return env.change_windows.map((w) => `${(w.days || []).join(", ")} ${w.start}–${w.end} ${w.timezone || "UTC"}`)
    .join("; ");
}

function alertRules(env) {
  return table({
    caption: `Alert rules in ${env.name}`,
    empty: "No alert rules.",
    rows: env.settings.alerts || [],
    columns: [
      { label: "Rule", value: (r) => h("code", {}, r.name) },
      { label: "Metric", value: (r) => r.metric },
      { label: "Fires when", value: (r) => (r.above !== null && r.above !== undefined ? `above ${r.above}` : `below ${r.below}`) },
      { label: "Window", value: (r) => r.window },
      { label: "Min. sessions", value: (r) => r.min_sessions, num: true },
      { label: "Severity", value: (r) => badge(r.severity) },
      { label: "Agent", value: (r) => r.agent || "each agent" },
    ],
  });
}

export default {
  path: "environments",
  title: "Environments",
  read: "environment.read",
  async render(view, ctx) {
    const [details, index] = await Promise.all([environments(ctx), bundleIndex(ctx)]);
    view.append(
      h("p", { class: "lede" }, "Changes move through these environments in order. Settings come from ",
        h("code", {}, "environments.yaml"), " in the policy directory and change only through it."),
      table({
        caption: "Environments in promotion order",
        rows: details,
        columns: [
          { label: "Environment", value: (e) => h("strong", {}, e.name) },
          { label: "Tier", value: (e) => badge(e.tier, e.tier === "production" ? "warn" : "info") },
          { label: "Publishing", value: (e) => (e.requires_approval ? "needs an approver" : e.previous ? "promotion" : "deploy") },
          { label: "Change window", value: (e) => (e.change_window_open ? badge("open", "ok") : badge("closed", "bad")) },
          { label: "Active agents", value: (e) => (Object.keys(e.active).length
            ? h("ul", { class: "plain" }, Object.entries(e.active).map(([agent, d]) => h("li", {}, `${agent}: `, version(index, d))))
            : h("span", { class: "empty" }, "none")) },
          { label: "This worker", value: (e) => (e.served_here ? "serves it" : "—") },
        ],
      }),
    );
    for (const env of details) {
      const s = env.settings;
      const gates = (s.gates || []).map((g) => g.name);
      const quotas = Object.entries(s.quotas || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`);
      view.append(h("section", { class: "panel", "aria-labelledby": `env-${env.name}` },
        h("h2", { id: `env-${env.name}` }, `${env.name} `, badge(env.tier, "neutral")),
        env.description ? h("p", {}, env.description) : null,
        facts([
          ["Comes after", env.previous || "— (first environment)"],
          ["Change windows", windows(env)],
          ["Gates required", gates.length ? gates.join(", ") : "none"],
          ["Checklist items required", Array.isArray(s.checklist?.required)
            ? (s.checklist.required.length ? s.checklist.required.join(", ") : "none") : "all 18"],
          ["Retention", `${s.retention_days} days`],
          ["Quotas", quotas.length ? quotas.join("; ") : "none"],
          ["Alert webhooks", (s.webhooks || []).length ? s.webhooks.join(", ") : "none"],
          ["Incident procedure", s.incident_procedure || "—"],
        ]),
        h("h3", {}, "Alert rules"), alertRules(env)));
    }
  },
};
