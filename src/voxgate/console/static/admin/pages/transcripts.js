// Stored conversations (personal data redacted before storage): search by words, time, agent,
// outcome, intent and escalation reason; open one to read its turns.

import { api, enc } from "../api.js";
import { badge, clear, digest, facts, field, h, message, select, table, time } from "../dom.js";

const OUTCOMES = [["", "any"], ["resolved", "resolved"], ["escalated", "escalated"], ["abandoned", "abandoned"],
  ["unengaged", "unengaged"]];
const PERIODS = [["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]];
let lastSearch = null; // kept while you open a transcript and come back

function outcomeBadge(outcome) {
  return outcome ? badge(outcome, outcome === "resolved" ? "ok" : outcome === "escalated" ? "warn" : "neutral") : badge("live", "info");
}

/**
 * Which build answered: the short digest of the released bundle, or (no digest) an unreleased
 * development build served from an agent directory. "—" when the record does not say.
 */
export function build(session) {
  if (session.bundle_digest === undefined) return "—";
  if (session.bundle_digest === null) {
    return h("span", { class: "badge warn", "data-build": "development" }, "unreleased development build");
  }
  return h("span", { "data-build": session.bundle_digest }, digest(session.bundle_digest));
}

async function detail(view, ctx, id) {
  ctx.setHeading("Transcript");
  view.append(h("p", {}, h("a", { href: "#/transcripts" }, "Back to the search")));
  const s = await api(`/api/sessions/${enc(id)}`);
  view.append(h("section", { class: "panel", "aria-labelledby": "s-h" }, h("h2", { id: "s-h" }, `Conversation ${s.id}`),
    facts([
      ["Agent", s.agent], ["Build", build(s)], ["Environment", s.environment], ["Channel", s.channel],
      ["Started", time(s.started_at)], ["Ended", time(s.ended_at)], ["Outcome", outcomeBadge(s.outcome)],
      ["Caller verified", s.verified ? "yes" : "no"], ["Escalation reason", s.escalation_reason || "—"],
    ])));
  const turns = h("ol", { class: "transcript", "aria-label": "Turns, in order" });
  for (const t of s.turns) {
    const meta = t.intent ? `intent ${t.intent}${t.confidence !== null && t.confidence !== undefined ? ` (${Math.round(t.confidence * 100)} %)` : ""}` : "";
    if (t.user !== null && t.user !== undefined) {
      turns.append(h("li", { class: "caller" }, h("span", { class: "who" }, "Caller:"), t.user, meta ? h("span", { class: "meta" }, meta) : null));
    }
    if (t.agent) turns.append(h("li", { class: "agent" }, h("span", { class: "who" }, "Agent:"), t.agent,
      t.state ? h("span", { class: "meta" }, `state ${t.state}`) : null));
  }
  view.append(h("section", { "aria-labelledby": "t-h" }, h("h2", { id: "t-h" }, "Turns"),
    s.turns.length ? turns : message("No turns were recorded.", "info")));
}

export default {
  path: "transcripts",
  title: "Transcripts",
  read: "session.read",
  scope: "worker",
  async render(view, ctx, params) {
    if (params[0]) return detail(view, ctx, params[0]);
    const q = lastSearch || {};
    const words = h("input", { type: "search", value: q.q || "", placeholder: "words said by the caller or the agent" });
    const since = select(PERIODS, q.since || "24h");
    const agent = h("input", { type: "text", value: q.agent || "", size: 16 });
    const outcome = select(OUTCOMES, q.outcome || "");
    const intent = h("input", { type: "text", value: q.intent || "", size: 14 });
    const reason = h("input", { type: "text", value: q.escalation_reason || "", size: 14 });
    const button = h("button", { type: "submit" }, "Search");
    const body = h("div", { "aria-live": "polite" });
    const load = async () => {
      clear(body);
      lastSearch = { q: words.value.trim(), since: since.value, agent: agent.value.trim(), outcome: outcome.value,
        intent: intent.value.trim(), escalation_reason: reason.value.trim() };
      button.disabled = true;
      try {
        const rows = await api("/api/sessions", { query: { ...lastSearch, environment: ctx.worker, limit: 200 } });
        body.append(table({
          caption: `${rows.length} conversation${rows.length === 1 ? "" : "s"} found in ${ctx.worker}, newest first`,
          empty: "No conversation matches.",
          rows,
          rowAttrs: (r) => ({ "data-session": r.id }),
          columns: [
            { label: "Started", value: (r) => time(r.started_at) },
            { label: "Agent", value: (r) => r.agent },
            { label: "Build", value: (r) => build(r) },
            { label: "Channel", value: (r) => r.channel },
            { label: "Outcome", value: (r) => outcomeBadge(r.outcome) },
            { label: "Turns", value: (r) => r.turns, num: true },
            { label: "Escalation reason", value: (r) => r.escalation_reason || "—" },
            { label: "Transcript", value: (r) => h("a", { href: `#/transcripts/${enc(r.id)}`,
              "aria-label": `Read the conversation of ${time(r.started_at)} (${r.outcome || "live"})` }, "Read") },
          ],
        }));
      } catch (err) {
        body.append(message(err.message, "error"));
      } finally {
        button.disabled = false;
      }
    };
    const form = h("form", { class: "panel", role: "search", "aria-label": "Search conversations" },
      h("div", { class: "row" }, field("Words", words), field("Period", since), field("Agent", agent),
        field("Outcome", outcome), field("Intent", intent), field("Escalation reason", reason), button));
    form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    view.append(h("p", { class: "lede" }, `Conversations recorded by the ${ctx.worker} worker. Personal data was `,
      "replaced by placeholders such as <ACCOUNT_NUMBER> before anything was stored."), form, body);
    await load();
  },
};
