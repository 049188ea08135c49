// The audit log: the append-only hash chain of every control-plane action, refusal and runtime
// connector call; filter it, and verify the whole chain (recomputed on the server).

import { api } from "../api.js";
import { badge, clear, facts, field, h, message, select, table } from "../dom.js";
import { actor, knowPeople, userIdOf, who } from "./shared.js";

/** An event's data in full, as key=value pairs (nested values as JSON); the cell wraps it. */
function compact(data) {
  if (!data || typeof data !== "object") return String(data ?? "");
  return Object.entries(data).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

/** A resource such as "bundle:sha256:…" or "user:ID" (with the user's name when known). */
function resource(ctx, text) {
  if (/^user:/.test(text) && userIdOf(text)) return h("span", { title: text }, "user ", who(ctx, userIdOf(text)));
  return h("code", { title: text }, text.length > 26 ? `${text.slice(0, 25)}…` : text);
}

export default {
  path: "audit",
  title: "Audit log",
  read: "audit.read",
  scope: "global",
  async render(view, ctx) {
    const action = h("input", { type: "text", placeholder: "e.g. release.* or auth.denied", size: 24 });
    const env = select([["", "any"], ...ctx.envNames.map((e) => [e, e])], "");
    const limit = select(["50", "100", "250", "1000"], "100");
    const search = h("button", { type: "submit" }, "Show events");
    const verifyButton = h("button", { type: "button", class: "secondary" }, "Verify the chain");
    const verifyOut = h("div", { "aria-live": "polite", "data-verify": "" });
    const body = h("div", { "aria-live": "polite" });

    const load = async () => {
      clear(body);
      search.disabled = true;
      try {
        const events = await api("/api/audit/events", { query: { action: action.value.trim(), environment: env.value,
          limit: limit.value } });
        await knowPeople(ctx, events.flatMap((e) => [e.actor, /^user:/.test(e.resource) ? e.resource : null]));
        body.append(table({
          caption: `Audit events, newest first (${events.length})`,
          empty: "No events match.",
          rows: events,
          rowAttrs: (e) => ({ "data-seq": e.seq }),
          columns: [
            { label: "Seq", value: (e) => e.seq, num: true },
            { label: "Time (UTC)", value: (e) => h("span", { class: "nowrap" }, e.at.replace("T", " ").slice(0, 19)) },
            { label: "Actor", value: (e) => actor(ctx, e.actor) },
            { label: "Action", value: (e) => e.action },
            { label: "Resource", value: (e) => resource(ctx, e.resource) },
            { label: "Env.", value: (e) => e.environment || "—" },
            { label: "Outcome", value: (e) => badge(e.outcome, e.outcome === "ok" ? "ok" : e.outcome === "denied" ? "denied" : "warn") },
            { label: "Data", cls: "data", value: (e) => h("span", { class: "mono" }, compact(e.data)) },
          ],
        }));
      } catch (err) {
        body.append(message(err.message, "error"));
      } finally {
        search.disabled = false;
      }
    };

    verifyButton.addEventListener("click", async () => {
      clear(verifyOut);
      verifyButton.disabled = true;
      verifyOut.append(h("p", { class: "loading" }, "Recomputing every hash…"));
      try {
        const r = await api("/api/audit/verify");
        clear(verifyOut);
        const headline = r.ok ? `The chain verifies: ${r.events_checked} events and ${r.checkpoints_checked} signed checkpoints recomputed.`
          : `The chain does NOT verify: the first bad event is sequence ${r.first_bad_seq} (${r.reason}).`;
        verifyOut.append(message(headline, r.ok ? "ok" : "error"), facts([
          ["Last sequence", String(r.last_seq)],
          ["Head hash", h("code", {}, r.head_hash)],
          ["Last signed checkpoint", r.last_checkpoint_seq === null ? "none yet" : String(r.last_checkpoint_seq)],
          ["Events after it", `${r.unsigned_tail} (dropping these from the end could go unnoticed until the next checkpoint)`],
        ]));
        ctx.announce(headline);
      } catch (err) {
        clear(verifyOut).append(message(err.message, "error"));
      } finally {
        verifyButton.disabled = false;
      }
    });

    const form = h("form", { class: "row" }, field("Action", action), field("Environment", env), field("Show", limit), search);
    form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    view.append(
      h("p", { class: "lede" }, "Every event is linked to the one before it by a sha256 hash, with signed checkpoints; ",
        "events carry ids and hashes, never names or transcript text. Nothing can update or delete them."),
      h("div", { class: "panel" }, h("h2", {}, "Integrity"), h("p", {}, verifyButton), verifyOut),
      form, body);
    await load();
  },
};
