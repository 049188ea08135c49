// Gate results and the readiness checklist of an agent's candidate version for an environment:
// the version active in the environment before it, evaluated now from stored evidence.

import { api, enc } from "../api.js";
import { badge, clear, field, h, message, select, table, time } from "../dom.js";
import { bundleIndex, environments, knowPeople, publishRequests, version, who } from "./shared.js";

export function checklistTable(report) {
  const required = report.items.filter((i) => i.required);
  const failing = required.filter((i) => i.status === "fail");
  return h("div", {},
    h("p", { "data-ready": report.ready ? "yes" : "no" },
      report.ready ? badge("ready", "ok") : badge("not ready", "bad"), " ",
      `${report.counts.pass} pass, ${report.counts.warn} warn, ${report.counts.fail} fail; `,
      `${required.length} of ${report.items.length} items are required here, ${failing.length} of them failing.`),
    table({
      caption: `Readiness checklist for ${report.agent} entering ${report.environment}`,
      rows: report.items,
      rowAttrs: (i) => ({ "data-checklist-item": i.id, "data-status": i.status }),
      columns: [
        { label: "Item", value: (i) => i.title },
        { label: "Area", value: (i) => i.section },
        { label: "Status", value: (i) => badge(i.status) },
        { label: "Required", value: (i) => (i.required ? "required" : "advisory") },
        { label: "Evidence", value: (i) => i.detail },
      ],
    }));
}

/** Who ran a gate (an audit actor: "user:ID" or "user:ID/token:ID"), by name when known. */
function runBy(ctx, run) {
  const m = /^user:([0-9a-f]+)(\/token:\w+)?$/.exec(run.actor || "");
  if (!m) return h("code", {}, run.actor);
  return h("span", { title: run.actor }, who(ctx, m[1], run.actor_name), m[2] ? " (API token)" : "");
}

/** Every stored run of a gate on the agent's versions entering the environment, newest first (with who ran it). */
export async function gateRuns(ctx, env, agent, digest) {
  const runs = await api(`/api/environments/${enc(env)}/agents/${enc(agent)}/gate-runs`, { query: { digest } });
  await knowPeople(ctx, runs.map((r) => r.actor), Object.fromEntries(runs.map((r) => [r.actor.replace(/^user:|\/.*$/g, ""), r.actor_name])));
  return runs;
}

export function gateRunsTable(ctx, runs, index, env) {
  return table({
    caption: `Gate runs for entering ${env}, newest first`,
    empty: `No gate has run yet for entering ${env}.`,
    rows: runs,
    rowAttrs: (r) => ({ "data-gate-run": r.id, "data-status": r.status }),
    columns: [
      { label: "Started", value: (r) => time(r.started_at) },
      { label: "Gate", value: (r) => r.gate.replaceAll("_", " ") },
      { label: "Version", value: (r) => version(index, r.digest) },
      { label: "Result", value: (r) => badge(r.status, r.status === "passed" ? "pass" : "fail") },
      { label: "Ran in", value: (r) => r.ran_in },
      { label: "Run by", value: (r) => runBy(ctx, r) },
      { label: "Took", value: (r) => `${(r.duration_ms / 1000).toFixed(1)} s`, num: true },
    ],
  });
}

/** The gates an environment requires on one version; `runs` (optional) says who ran each latest run. */
export function gatesTable(gates, ctx, runs) {
  const byId = new Map((runs || []).map((r) => [r.id, r]));
  return table({
    caption: `Gates ${gates.environment} requires, on this version`,
    empty: `${gates.environment} requires no gates.`,
    rows: gates.gates,
    rowAttrs: (g) => ({ "data-gate": g.gate, "data-status": g.status }),
    columns: [
      { label: "Gate", value: (g) => g.gate.replaceAll("_", " ") },
      { label: "Required", value: (g) => (g.required ? "yes" : "no") },
      { label: "Latest run", value: (g) => badge(g.status.replaceAll("_", " "),
        g.status === "passed" ? "pass" : g.status === "never_ran" ? "neutral" : "fail") },
      { label: "Started", value: (g) => time(g.started_at) },
      { label: "Took", value: (g) => (g.duration_ms === null ? "—" : `${(g.duration_ms / 1000).toFixed(1)} s`), num: true },
      ...(ctx ? [{ label: "Run by", value: (g) => (byId.has(g.run_id) ? runBy(ctx, byId.get(g.run_id)) : "—") }] : []),
    ],
  });
}

export default {
  path: "gates",
  title: "Gates and readiness",
  read: "release.read",
  async render(view, ctx, params, query) {
    const [envs, index, requests] = await Promise.all([environments(ctx), bundleIndex(ctx),
      publishRequests(ctx).catch(() => [])]);
    const entering = envs.filter((e) => e.previous && ctx.can("release.read", e.name));
    // every agent with an uploaded bundle, a release or a publish request
    const agents = [...new Set([...index.agents, ...envs.flatMap((e) => Object.keys(e.active)),
      ...requests.map((r) => r.agent)])].sort();
    if (!entering.length || !agents.length) {
      view.append(message(!agents.length ? "No agents yet: no bundle has been uploaded and nothing is released."
        : "No agents or no environments to evaluate yet.", "info"));
      return;
    }
    const envPick = select(entering.map((e) => e.name), query.get("env") || entering[entering.length - 1].name);
    const agentPick = select(agents, query.get("agent") || agents[0]);
    const body = h("div", { "aria-live": "polite" });
    const load = async () => {
      clear(body);
      const env = envs.find((e) => e.name === envPick.value);
      const before = envs.find((e) => e.name === env.previous); // unknown when its environment is not yours to read
      const known = before ? before.active[agentPick.value] : undefined;
      try {
        const runs = await gateRuns(ctx, envPick.value, agentPick.value);
        const history = h("section", { class: "panel", "aria-labelledby": "r-h", "data-section": "gate-runs" },
          h("h2", { id: "r-h" }, "Gate runs"), gateRunsTable(ctx, runs, index, envPick.value));
        if (before && !known) {
          body.append(message(`${agentPick.value} is not active in ${before.name}: there is no candidate to evaluate for ${envPick.value}.`, "info"),
            history);
          return;
        }
        const base = `/api/environments/${enc(envPick.value)}/agents/${enc(agentPick.value)}`;
        const gates = await api(`${base}/gates`, { query: { digest: known } }); // the server finds the candidate if need be
        const candidate = gates.digest;
        const report = await api(`${base}/checklist`, { query: { digest: candidate } });
        body.append(
          h("p", {}, `Candidate: the version active in ${env.previous}, `, version(index, candidate), "."),
          h("section", { class: "panel", "aria-labelledby": "g-h" }, h("h2", { id: "g-h" }, "Gate results"),
            gatesTable(gates, ctx, runs)),
          h("section", { class: "panel", "aria-labelledby": "c-h" }, h("h2", { id: "c-h" }, "Readiness checklist"),
            checklistTable(report)),
          history);
      } catch (err) {
        body.append(message(err.message, "error"));
      }
    };
    envPick.addEventListener("change", load);
    agentPick.addEventListener("change", load);
    view.append(h("p", { class: "lede" }, "Gates run on promotion (", h("code", {}, "voxgate gates run"),
      ") and store their evidence per version; the checklist is computed from that evidence, never ticked by hand."),
    h("div", { class: "row" }, field("Entering environment", envPick), field("Agent", agentPick)), body);
    await load();
  },
};
