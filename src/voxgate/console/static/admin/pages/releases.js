// The release pipeline: what is active where, deploy → promote → publish request → approval →
// publish → rollback, the publish requests with their review screen (readiness checklist, gates,
// the diff against what is live), and the release history of each environment.

import { api, enc } from "../api.js";
import { badge, clear, facts, field, h, message, select, table, time } from "../dom.js";
import { diffView } from "./agents.js";
import { checklistTable, gateRuns, gatesTable } from "./gates.js";
import { actAndRefresh, bundleIndex, environments, knowPeople, outlet, publishRequests, readerQuery, showFlash, version,
  who } from "./shared.js";

/**
 * What still keeps a version from being published into an environment: the required readiness
 * items that fail and the required gates that have not passed on it (empty when nothing does).
 */
export function publishBlockers(checklist, gates) {
  const items = checklist.items.filter((i) => i.required && i.status === "fail").map((i) => i.title);
  const failing = gates.gates.filter((g) => g.required && g.status !== "passed")
    .map((g) => `${g.gate.replaceAll("_", " ")} (${g.status.replaceAll("_", " ")})`);
  return { items, gates: failing, any: items.length + failing.length > 0 };
}

/** What blocks, in words: `the required readiness item "…" fails; the required gate escalation has not passed (never ran)`. */
export function blockersText(blockers) {
  const parts = [];
  const quoted = blockers.items.map((t) => `"${t}"`).join(", ");
  if (blockers.items.length === 1) parts.push(`the required readiness item ${quoted} fails`);
  else if (blockers.items.length) parts.push(`the required readiness items ${quoted} fail`);
  if (blockers.gates.length === 1) parts.push(`the required gate ${blockers.gates[0]} has not passed`);
  else if (blockers.gates.length) parts.push(`the required gates ${blockers.gates.join(", ")} have not passed`);
  return parts.join("; ");
}

/** The outcome of an approval, as the checklist and gates evaluated right after it stand. */
export function approvedText(blockers) {
  return blockers.any ? { text: `Approved, but it cannot be published yet: ${blockersText(blockers)}.`, kind: "warn" }
    : { text: "Approved. It can now be published.", kind: "ok" };
}

function requestsTable(ctx, requests, index) {
  const order = { pending: 0, approved: 1 };
  const rows = [...requests].sort((a, b) => (order[a.status] ?? 2) - (order[b.status] ?? 2)
    || b.created_at.localeCompare(a.created_at));
  return table({
    caption: "Publish requests, open ones first",
    empty: "No publish requests yet.",
    rows,
    rowAttrs: (r) => ({ "data-request": r.id, "data-status": r.status }),
    columns: [
      { label: "Requested", value: (r) => time(r.created_at) },
      { label: "Agent", value: (r) => r.agent },
      { label: "Version", value: (r) => version(index, r.digest) },
      { label: "Route", value: (r) => `${r.source_environment} → ${r.target_environment}` },
      { label: "Requested by", value: (r) => who(ctx, r.requested_by, r.requested_by_name) },
      { label: "Reason", value: (r) => r.reason || "—" },
      { label: "Status", value: (r) => badge(r.status) },
      { label: "Review", value: (r) => h("a", { href: `#/releases/request/${enc(r.id)}`,
        "aria-label": `Review the request to publish ${r.agent} ${index.byDigest.get(r.digest)?.version || ""} to ${r.target_environment}` },
      r.status === "pending" ? "Review" : "Details") },
    ],
  });
}

function pipeline(ctx, agent, envs, index, requests) {
  const out = outlet();
  const versions = index.list.filter((b) => b.agent === agent);
  // the environment before each one, when the user may read it (else the server decides on its own)
  const rows = envs.map((env) => ({ env, prev: envs.find((e) => e.name === env.previous) || null }));
  const actions = ({ env, prev }) => {
    const here = env.active[agent];
    const reason = h("input", { type: "text", size: 18, placeholder: "why (optional)" });
    const buttons = [];
    if (!env.previous && ctx.can("bundle.deploy", env.name) && versions.length) {
      const pick = select(versions.map((b) => [b.digest, `${b.version} (${b.digest.slice(7, 15)})`]), versions[0].digest,
        { "aria-label": `Version of ${agent} to deploy to ${env.name}` });
      const button = h("button", { type: "button" }, `Deploy to ${env.name}`);
      button.addEventListener("click", () => actAndRefresh(ctx, button, out, () => api(
        `/api/environments/${enc(env.name)}/agents/${enc(agent)}/deploy`,
        { method: "POST", body: { digest: pick.value, reason: reason.value } }),
      (r) => `Deployed ${agent} ${index.byDigest.get(r.digest)?.version || r.digest} to ${env.name}.`));
      buttons.push(pick, button);
    }
    if (env.previous && env.tier !== "production" && ctx.can("bundle.promote", env.name)) {
      const candidate = prev ? prev.active[agent] : here;
      const button = h("button", { type: "button", disabled: prev !== null && (!candidate || candidate === here) },
        `Promote from ${env.previous}`);
      button.addEventListener("click", () => actAndRefresh(ctx, button, out, () => api(
        `/api/environments/${enc(env.name)}/agents/${enc(agent)}/promote`,
        { method: "POST", body: { reason: reason.value } }),
      (r) => `Promoted ${agent} ${index.byDigest.get(r.digest)?.version || ""} to ${env.name}.`));
      buttons.push(button);
    }
    if (env.previous && env.tier === "production" && ctx.can("publish.request", env.name)) {
      const candidate = prev ? prev.active[agent] : here;
      const open = requests.some((r) => r.agent === agent && r.target_environment === env.name && r.digest === candidate
        && (r.status === "pending" || r.status === "approved"));
      const button = h("button", { type: "button", disabled: open || (prev !== null && (!candidate || candidate === here)),
        title: open ? "a request for this version is already open" : null }, `Request publish from ${env.previous}`);
      button.addEventListener("click", () => actAndRefresh(ctx, button, out, () => api(
        `/api/environments/${enc(env.name)}/agents/${enc(agent)}/publish-requests`,
        { method: "POST", body: { reason: reason.value } }),
      (r) => `Asked to publish ${agent} ${index.byDigest.get(r.digest)?.version || ""} to ${env.name}; an approver must approve it.`));
      buttons.push(button);
    }
    if (here && ctx.can("release.rollback", env.name)) {
      const button = h("button", { type: "button", class: "danger" }, `Roll back ${env.name}`);
      button.addEventListener("click", () => actAndRefresh(ctx, button, out, () => api(
        `/api/environments/${enc(env.name)}/agents/${enc(agent)}/rollback`,
        { method: "POST", body: { reason: reason.value } }),
      (r) => `Rolled ${agent} in ${env.name} back to ${index.byDigest.get(r.digest)?.version || r.digest}.`));
      buttons.push(button);
    }
    if (!buttons.length) return h("span", { class: "empty" }, "—");
    reason.setAttribute("aria-label", `Reason for the change to ${agent} in ${env.name}`);
    return h("div", { class: "row" }, reason, buttons);
  };
  return h("section", { class: "panel", "aria-labelledby": `pipe-${agent}` },
    h("h3", { id: `pipe-${agent}` }, agent),
    table({
      caption: `Where ${agent} is active`,
      hideCaption: true,
      rows,
      columns: [
        { label: "Environment", value: ({ env }) => h("strong", {}, env.name) },
        { label: "Tier", value: ({ env }) => env.tier },
        { label: "Active version", value: ({ env }) => version(index, env.active[agent]) },
        { label: "Actions", value: actions },
      ],
    }), out);
}

async function historySection(ctx, envs, index, initialEnv) {
  const names = ctx.envsWhere("release.read");
  const envPick = select(names, names.includes(initialEnv) ? initialEnv : names[names.length - 1]);
  const agentNames = [...new Set([...index.agents, ...envs.flatMap((e) => Object.keys(e.active))])].sort();
  const agentPick = select([["", "every agent"], ...agentNames.map((a) => [a, a])], "");
  const body = h("div", { "aria-live": "polite" });
  const load = async () => {
    clear(body);
    try {
      const rows = await api(`/api/environments/${enc(envPick.value)}/releases`, { query: { agent: agentPick.value } });
      await knowPeople(ctx, rows.flatMap((r) => [r.actor, r.evidence?.approved_by]),
        Object.fromEntries(rows.map((r) => [r.actor, r.actor_name])));
      body.append(table({
        caption: `Release history of ${envPick.value}, newest first`,
        empty: `Nothing has been released to ${envPick.value} yet.`,
        rows,
        rowAttrs: (r) => ({ "data-release": r.id, "data-action": r.action, "data-digest": r.digest }),
        columns: [
          { label: "When", value: (r) => time(r.at) },
          { label: "Action", value: (r) => badge(r.action, "neutral") },
          { label: "Agent", value: (r) => r.agent },
          { label: "Version", value: (r) => version(index, r.digest) },
          { label: "Replaced", value: (r) => (r.previous_digest ? version(index, r.previous_digest) : "—") },
          { label: "By", value: (r) => who(ctx, r.actor, r.actor_name) },
          { label: "Approved by", value: (r) => (r.evidence?.approved_by ? who(ctx, r.evidence.approved_by) : "—") },
          { label: "Reason", value: (r) => r.reason || "—" },
          { label: "Request", value: (r) => (r.request_id ? h("a", { href: `#/releases/request/${enc(r.request_id)}` }, r.request_id) : "—") },
        ],
      }));
    } catch (err) {
      body.append(message(err.message, "error"));
    }
  };
  envPick.addEventListener("change", load);
  agentPick.addEventListener("change", load);
  await load();
  return h("section", { "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "Release history"),
    h("div", { class: "row" }, field("Environment", envPick), field("Agent", agentPick)), body);
}

/** Per environment, which version of each agent is live there now. */
function liveTable(ctx, envs, index) {
  const rows = envs.flatMap((env) => {
    const agents = Object.keys(env.active).sort();
    return agents.length ? agents.map((agent) => ({ env, agent, digest: env.active[agent] })) : [{ env, agent: null }];
  });
  const devNote = (env) => (env.served_here && ctx.health?.mode === "development"
    ? h("small", { class: "hint" }, " (this worker serves development builds from agent directories, not this release)") : null);
  return table({
    caption: "What is live in each environment now",
    hideCaption: true,
    rows,
    rowAttrs: (r) => ({ "data-live-env": r.env.name, "data-live-agent": r.agent || "", "data-live-digest": r.digest || "" }),
    columns: [
      { label: "Environment", value: (r) => h("span", {}, h("strong", {}, r.env.name), devNote(r.env)) },
      { label: "Tier", value: (r) => r.env.tier },
      { label: "Agent", value: (r) => r.agent || h("span", { class: "empty" }, "nothing released here yet") },
      { label: "Live version", value: (r) => (r.agent ? version(index, r.digest) : "—") },
    ],
  });
}

async function overview(view, ctx, query) {
  const [envs, index, requests] = await Promise.all([environments(ctx), bundleIndex(ctx), publishRequests(ctx)]);
  showFlash(view);
  view.append(h("p", { class: "lede" }, "A version reaches production only through an approved publish request; ",
    "its author and requester can never approve it. Every step is written to the audit log."));
  if (envs.length) {
    view.append(h("section", { "aria-labelledby": "live-h" }, h("h2", { id: "live-h" }, "Live now"),
      liveTable(ctx, envs, index)));
  }
  view.append(h("section", { "aria-labelledby": "requests-h" }, h("h2", { id: "requests-h" }, "Publish requests"),
    requestsTable(ctx, requests, index)));
  const agents = [...new Set([...index.agents, ...envs.flatMap((e) => Object.keys(e.active)),
    ...requests.map((r) => r.agent)])].sort();
  view.append(h("section", { "aria-labelledby": "pipeline-h" }, h("h2", { id: "pipeline-h" }, "Pipeline"),
    agents.length ? agents.map((a) => pipeline(ctx, a, envs, index, requests)) : message("No agents yet.", "info")));
  view.append(await historySection(ctx, envs, index, query.get("env")));
}

async function review(view, ctx, id) {
  ctx.setHeading("Review publish request");
  const [requests, index, permissions] = await Promise.all([publishRequests(ctx), bundleIndex(ctx),
    api("/api/me/permissions", { query: { publish_request: id } })]);
  const req = requests.find((r) => r.id === id);
  view.append(h("p", {}, h("a", { href: "#/releases" }, "Back to releases")));
  showFlash(view);
  if (!req) {
    view.append(message(`There is no publish request ${id}.`, "error"));
    return;
  }
  const allowed = permissions.publish_request?.actions || [];
  const bundle = index.byDigest.get(req.digest);
  const target = req.target_environment;
  const base = `/api/environments/${enc(target)}/agents/${enc(req.agent)}`;
  const [checklist, gates, env, runs] = await Promise.all([
    api(`${base}/checklist`, { query: { digest: req.digest } }),
    api(`${base}/gates`, { query: { digest: req.digest } }),
    api(`/api/environments/${enc(target)}`),
    gateRuns(ctx, target, req.agent, req.digest).catch(() => []),
  ]);
  const live = env.active[req.agent];
  await knowPeople(ctx, [bundle?.author, req.requested_by, req.decided_by],
    { [req.requested_by]: req.requested_by_name, [req.decided_by || ""]: req.decided_by_name });
  const blockers = publishBlockers(checklist, gates);

  view.append(h("section", { class: "panel", "aria-labelledby": "req-h" }, h("h2", { id: "req-h" },
    `Publish ${req.agent} ${bundle ? bundle.version : ""} to ${target}`),
  facts([
    ["Status", badge(req.status)],
    ["Version", version(index, req.digest)],
    ["Full digest", h("code", {}, req.digest)],
    ["From", `${req.source_environment} (where it is active now)`],
    ["Requested by", who(ctx, req.requested_by, req.requested_by_name)],
    ["Requested", time(req.created_at)],
    ["Reason", req.reason || "—"],
    ["Author of the version", bundle ? who(ctx, bundle.author) : "—"],
    req.decided_by ? ["Decided by", who(ctx, req.decided_by, req.decided_by_name)] : null,
    req.decision_comment ? ["Decision comment", req.decision_comment] : null,
    req.published_at ? ["Published", time(req.published_at)] : null,
  ])));

  if (req.status === "pending" || req.status === "approved") {
    view.append(h("div", { class: `message ${blockers.any ? "warn" : "ok"}`, "data-publish-ready": blockers.any ? "no" : "yes" },
      blockers.any ? `Not ready to publish to ${target}: ${blockersText(blockers)}.`
        : `Ready to publish to ${target}${req.status === "pending" ? " once approved" : ""}: every required readiness item and gate passes.`));
  }
  view.append(h("section", { class: "panel", "aria-labelledby": "check-h", "data-section": "checklist" },
    h("h2", { id: "check-h" }, "Readiness checklist"), checklistTable(checklist)));
  view.append(h("section", { class: "panel", "aria-labelledby": "gates-h" }, h("h2", { id: "gates-h" }, "Gates"),
    gatesTable(gates, ctx, runs)));

  const diffOut = h("div", { "aria-live": "polite" });
  const changes = h("section", { class: "panel", "aria-labelledby": "diff-h" }, h("h2", { id: "diff-h" }, "Changes"));
  if (!live) changes.append(h("p", {}, `Nothing is active in ${target} yet: this would be its first release.`));
  else if (live === req.digest) changes.append(h("p", {}, `This version is already active in ${target}.`));
  else {
    const button = h("button", { type: "button", class: "secondary" }, `Show the differences from the version live in ${target}`);
    button.addEventListener("click", async () => {
      clear(diffOut);
      try {
        const text = await api(`/api/bundles/${enc(live)}/diff/${enc(req.digest)}`,
          { text: true, query: readerQuery(ctx, "bundle.read") });
        diffOut.append(diffView(text, `Differences between the live version and this one`));
      } catch (err) {
        diffOut.append(message(err.message, "error"));
      }
    });
    changes.append(h("p", {}, "Live now: ", version(index, live)), button, diffOut);
  }
  view.append(changes);

  const decision = h("section", { class: "panel", "aria-labelledby": "decide-h", "data-section": "decision" },
    h("h2", { id: "decide-h" }, "Decision"));
  const out = outlet();
  if (req.status === "pending") {
    if (allowed.includes("publish.approve")) {
      const comment = h("textarea", { "aria-required": "true", rows: 3 }); // checked here, with a message that says why
      const approve = h("button", { type: "submit", value: "approve" }, "Approve");
      const reject = h("button", { type: "button", class: "danger" }, "Reject");
      const form = h("form", {}, field("Comment (required: what you checked)", comment),
        h("div", { class: "actions" }, approve, reject));
      const decide = (ok, button) => {
        if (!comment.value.trim()) {
          clear(out).append(message("Write a comment first: the decision is recorded with it.", "error"));
          comment.focus();
          return;
        }
        actAndRefresh(ctx, button, out, async () => {
          const decided = await api(`/api/publish-requests/${enc(id)}/${ok ? "approve" : "reject"}`,
            { method: "POST", body: { comment: comment.value } });
          if (!ok) return decided;
          // what blocks publishing now that the approval is in (the approval item itself passes now)
          const [after, gatesAfter] = await Promise.all([
            api(`${base}/checklist`, { query: { digest: req.digest } }).catch(() => checklist),
            api(`${base}/gates`, { query: { digest: req.digest } }).catch(() => gates),
          ]);
          return { decided, blockers: publishBlockers(after, gatesAfter) };
        }, (r) => (ok ? approvedText(r.blockers) : "Rejected."));
      };
      form.addEventListener("submit", (event) => { event.preventDefault(); decide(true, approve); });
      reject.addEventListener("click", () => decide(false, reject));
      decision.append(form);
    } else {
      const why = req.requested_by === ctx.me.id ? "You asked for this publish, so someone else must approve it."
        : bundle && bundle.author === ctx.me.id ? "You wrote this version, so someone else must approve it."
          : `Your roles do not allow approving publishes to ${target}.`;
      decision.append(h("p", {}, "Waiting for an approver. ", why));
    }
  } else if (req.status === "approved") {
    if (allowed.includes("bundle.publish")) {
      const reason = h("input", { type: "text", size: 40 });
      const button = h("button", { type: "button" }, `Publish to ${target}`);
      button.addEventListener("click", () => actAndRefresh(ctx, button, out, () => api(`/api/publish-requests/${enc(id)}/publish`,
        { method: "POST", body: { reason: reason.value } }),
      `Published ${req.agent} ${bundle ? bundle.version : ""} to ${target}.`));
      decision.append(blockers.any
        ? h("p", {}, `Approved, but it cannot be published yet: ${blockersText(blockers)}. `,
          "Publishing is refused until that changes.")
        : h("p", {}, "Approved. Publishing makes it active for new conversations; calls in progress finish on the version they started with."),
      h("div", { class: "row" }, field("Note for the release (optional)", reason), button));
    } else {
      decision.append(h("p", {}, blockers.any
        ? `Approved, but it cannot be published yet: ${blockersText(blockers)}.`
        : `Approved; an approver or operator of ${target} publishes it.`));
    }
  } else if (req.status === "published") {
    decision.append(h("p", {}, `Published ${time(req.published_at)}. `,
      h("a", { href: `#/releases?env=${enc(target)}` }, `See the release history of ${target}`)));
  } else {
    decision.append(h("p", {}, `This request was ${req.status}.`));
  }
  decision.append(out);
  view.append(decision);
}

export default {
  path: "releases",
  title: "Releases",
  read: "release.read",
  async render(view, ctx, params, query) {
    if (params[0] === "request" && params[1]) return review(view, ctx, params[1]);
    return overview(view, ctx, query);
  },
};
