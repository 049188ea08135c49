// DLP: each environment's connector policy (host groups, the endpoint filter) and its time-limited
// exceptions; granting and revoking exceptions for those allowed to.

import { api, enc } from "../api.js";
import { badge, clear, field, h, message, select, table, time } from "../dom.js";
import { act, envSelect, knowPeople, outlet, who } from "./shared.js";

const RULES = [["mixing", "mixing business and non-business connectors"], ["blocked", "a blocked connector host"],
  ["endpoint", "an endpoint the filter denies"]];

function state(e) {
  const now = Date.now();
  if (e.revoked_at && Date.parse(e.revoked_at) <= now) return "revoked";
  if (Date.parse(e.expires_at) <= now) return "expired";
  return "active";
}

function grantForm(ctx, env, out, reload) {
  const connector = h("input", { type: "text", required: true });
  const rule = select(RULES, "endpoint");
  const agent = h("input", { type: "text" });
  const host = h("input", { type: "text" });
  const reason = h("textarea", { required: true, minlength: 5, rows: 2 });
  const inWeek = new Date(Date.now() + 7 * 86400e3).toISOString().slice(0, 10);
  const latest = new Date(Date.now() + 30 * 86400e3).toISOString().slice(0, 10);
  const expires = h("input", { type: "date", required: true, value: inWeek, max: latest });
  const button = h("button", { type: "submit" }, `Grant exception in ${env}`);
  const form = h("form", { class: "panel" }, h("h3", {}, "Grant an exception"),
    h("p", {}, "An exception lifts one rule for one connector, with a reason, for at most 30 days."),
    h("div", { class: "row" }, field("Connector", connector), field("Rule it lifts", rule),
      field("Agent (empty: any)", agent), field("Host (required for an endpoint)", host), field("Expires on", expires)),
    field("Reason", reason), h("div", { class: "actions" }, button));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { connector: connector.value.trim(), rule: rule.value, reason: reason.value.trim(),
      expires_at: new Date(`${expires.value}T23:59:00`).toISOString(), agent: agent.value.trim() || null,
      host: host.value.trim() || null };
    const done = await act(ctx, button, out, () => api(`/api/environments/${enc(env)}/dlp/exceptions`,
      { method: "POST", body }), `Granted an exception for ${body.connector} in ${env}.`);
    if (done) reload();
  });
  return form;
}

export default {
  path: "dlp",
  title: "DLP policies",
  read: "policy.read",
  async render(view, ctx, params, query) {
    const names = ctx.envsWhere("policy.read");
    const pick = envSelect(ctx, query.get("env") || names[names.length - 1], names);
    const body = h("div", {});
    const out = outlet();
    let shown = null;
    const load = async () => {
      clear(body);
      if (pick.value !== shown) clear(out);
      shown = pick.value;
      const env = pick.value;
      try {
        const data = await api(`/api/environments/${enc(env)}/dlp`, { query: { include_inactive: "true" } });
        await knowPeople(ctx, data.exceptions.map((e) => e.approver_id));
        const p = data.policy;
        body.append(
          h("section", { class: "panel", "aria-labelledby": "groups-h" }, h("h2", { id: "groups-h" }, `Connector groups in ${env}`),
            h("p", {}, "An agent may not combine business and non-business connectors; blocked hosts are never reachable. ",
              `A host no pattern matches is ${p.default_group.replace("_", "-")}.`),
            table({
              caption: "Host patterns per group", hideCaption: true,
              rows: ["business", "non_business", "blocked"].map((g) => ({ g, hosts: p.groups[g] || [] })),
              columns: [
                { label: "Group", value: (r) => badge(r.g.replace("_", "-"), r.g === "blocked" ? "bad" : r.g === "business" ? "ok" : "neutral") },
                { label: "Host patterns", value: (r) => (r.hosts.length ? r.hosts.map((x) => h("code", {}, x, " ")) : "none") },
              ],
            })),
          h("section", { class: "panel", "aria-labelledby": "endpoints-h" }, h("h2", { id: "endpoints-h" }, "Endpoint filter"),
            h("p", {}, `Rules are read in order; the first that matches host and path decides; no match means ${p.endpoints.default}.`),
            table({
              caption: "Endpoint rules in order", hideCaption: true, empty: "No rules.",
              rows: p.endpoints.rules.map((r, i) => ({ ...r, n: i + 1 })),
              columns: [
                { label: "#", value: (r) => r.n, num: true },
                { label: "Effect", value: (r) => badge(r.effect, r.effect === "allow" ? "ok" : "bad") },
                { label: "Hosts", value: (r) => r.hosts.join(", ") },
                { label: "Paths", value: (r) => r.paths.join(", ") },
                { label: "Description", value: (r) => r.description || "—" },
              ],
            })),
        );
        const canGrant = ctx.can("dlp.exception.grant", env);
        const exceptions = h("section", { class: "panel", "aria-labelledby": "exc-h" }, h("h2", { id: "exc-h" }, "Exceptions"),
          table({
            caption: `DLP exceptions in ${env}, newest first`, hideCaption: true, empty: "No exceptions.",
            rows: data.exceptions,
            columns: [
              { label: "Connector", value: (e) => h("code", {}, e.connector) },
              { label: "Lifts", value: (e) => e.rule },
              { label: "Agent", value: (e) => e.agent || "any" },
              { label: "Host", value: (e) => e.host || "any" },
              { label: "Reason", value: (e) => e.reason },
              { label: "Granted by", value: (e) => who(ctx, e.approver_id) },
              { label: "Expires", value: (e) => time(e.expires_at) },
              { label: "State", value: (e) => badge(state(e)) },
              ...(canGrant ? [{ label: "Revoke", value: (e) => {
                if (state(e) !== "active") return "—";
                const button = h("button", { type: "button", class: "secondary",
                  "aria-label": `Revoke the exception for ${e.connector} (${e.rule})` }, "Revoke");
                button.addEventListener("click", async () => {
                  if (await act(ctx, button, out, () => api(`/api/environments/${enc(env)}/dlp/exceptions/${enc(e.id)}`,
                    { method: "DELETE" }), `Revoked the exception for ${e.connector}.`)) load();
                });
                return button;
              } }] : []),
            ],
          }));
        body.append(exceptions);
        if (canGrant) body.append(grantForm(ctx, env, out, load));
      } catch (err) {
        body.append(message(err.message, "error"));
      }
    };
    pick.addEventListener("change", load);
    view.append(h("div", { class: "row" }, field("Environment", pick)), out, body);
    await load();
  },
};
