// Alerts and incidents: the alert rules of the environment this worker serves, and the incidents
// they opened (open → acknowledged → mitigated → resolved), each with its timeline.

import { api, enc } from "../api.js";
import { badge, clear, facts, field, h, message, select, table, time } from "../dom.js";
import { actAndRefresh, actor, knowPeople, outlet, showFlash } from "./shared.js";

const STEPS = { open: ["acknowledged", "mitigated", "resolved"], acknowledged: ["mitigated", "resolved"], mitigated: ["resolved"] };
const VERB = { acknowledged: "Acknowledge", mitigated: "Mark mitigated", resolved: "Resolve" };

function timelineEntry(ctx, e) {
  const note = typeof e.note === "string" ? e.note : Array.isArray(e.note)
    ? e.note.map((d) => `${d.webhook}: ${d.ok ? "delivered" : `failed (${d.error || "error"})`}`).join("; ") : JSON.stringify(e.note);
  return h("li", {}, h("strong", {}, e.kind), ` ${time(e.at)} by `, actor(ctx, e.actor), note ? ` — ${note}` : "");
}

function incidentCard(ctx, inc, canManage) {
  const out = outlet();
  const card = h("article", { class: "panel", "aria-labelledby": `inc-${inc.id}`, "data-incident": inc.id },
    h("h3", { id: `inc-${inc.id}` }, badge(inc.severity), " ", inc.summary),
    facts([
      ["Status", badge(inc.status)], ["Rule", h("code", {}, inc.rule)], ["Agent", inc.agent],
      ["Value / threshold", `${inc.value} / ${inc.threshold}`], ["Fired", `${inc.fired_count} time${inc.fired_count === 1 ? "" : "s"}`],
      ["Opened", time(inc.opened_at)], ["Resolved", time(inc.resolved_at)],
      ["Linked conversations", inc.sessions.length ? h("span", {}, `${inc.sessions.length}: `,
        inc.sessions.slice(0, 5).map((id, i) => [i ? ", " : "", h("a", { href: `#/transcripts/${enc(id)}` }, id.slice(0, 8))]),
        inc.sessions.length > 5 ? " …" : "") : "none"],
    ]),
    h("h4", {}, "Timeline"), h("ol", { class: "timeline" }, inc.timeline.map((e) => timelineEntry(ctx, e))));
  const next = STEPS[inc.status] || [];
  if (canManage && next.length) {
    const note = h("input", { type: "text", size: 40, "aria-label": `Note for incident ${inc.id}` });
    const buttons = next.map((step) => {
      const b = h("button", { type: "button", class: step === "resolved" ? "secondary" : null }, VERB[step]);
      b.addEventListener("click", () => actAndRefresh(ctx, b, out, () => api(`/api/incidents/${enc(inc.id)}/${step}`,
        { method: "POST", body: { note: note.value } }), `Incident ${inc.id} is now ${step}.`));
      return b;
    });
    card.append(h("div", { class: "row" }, note, buttons), out);
  }
  return card;
}

export default {
  path: "incidents",
  title: "Alerts and incidents",
  read: "incident.read",
  scope: "worker",
  async render(view, ctx, params, query) {
    showFlash(view);
    const canEnv = ctx.can("environment.read", ctx.worker);
    const [env, incidents] = await Promise.all([canEnv ? api(`/api/environments/${enc(ctx.worker)}`) : null,
      api("/api/incidents")]);
    await knowPeople(ctx, incidents.flatMap((i) => i.timeline.map((e) => e.actor)));
    view.append(h("p", { class: "lede" }, `Alert rules are evaluated continuously by the ${ctx.worker} worker; `,
      "a firing opens an incident (or updates the open one) and is sent to the webhooks."));
    if (env) {
      view.append(h("section", { class: "panel", "aria-labelledby": "rules-h" }, h("h2", { id: "rules-h" }, `Alert rules in ${ctx.worker}`),
        table({ caption: "Alert rules", hideCaption: true, empty: `No alert rules are set for ${ctx.worker}.`,
          rows: env.settings.alerts || [],
          columns: [
            { label: "Rule", value: (r) => h("code", {}, r.name) }, { label: "Metric", value: (r) => r.metric },
            { label: "Fires when", value: (r) => (r.above !== null && r.above !== undefined ? `above ${r.above}` : `below ${r.below}`) },
            { label: "Window", value: (r) => r.window }, { label: "Min. sessions", value: (r) => r.min_sessions, num: true },
            { label: "Severity", value: (r) => badge(r.severity) },
          ] }),
        h("p", {}, "Webhooks: ", (env.settings.webhooks || []).length ? env.settings.webhooks.join(", ") : "none",
          env.settings.incident_procedure ? ["; procedure: ", h("code", {}, env.settings.incident_procedure)] : "")));
    }
    const filter = select([["", "every status"], ["open", "open"], ["acknowledged", "acknowledged"], ["mitigated", "mitigated"],
      ["resolved", "resolved"]], query.get("status") || "");
    const list = h("div", { "aria-live": "polite" });
    const canManage = ctx.can("incident.manage", ctx.worker);
    const show = () => {
      clear(list);
      const rows = incidents.filter((i) => !filter.value || i.status === filter.value);
      if (!rows.length) list.append(message(filter.value ? `No ${filter.value} incidents.` : "No incidents.", "info"));
      for (const inc of rows) list.append(incidentCard(ctx, inc, canManage));
    };
    filter.addEventListener("change", show);
    view.append(h("section", { "aria-labelledby": "inc-h" }, h("h2", { id: "inc-h" }, `Incidents (${incidents.length})`),
      h("div", { class: "row" }, field("Status", filter)), list));
    show();
  },
};
