// What several pages share: bundle versions by digest, naming people, running an action with
// feedback, environment pickers.

import { api } from "../api.js";
import { clear, digest, h, message, select } from "../dom.js";

/**
 * How to ask for a global list as someone whose roles may be bound per environment: no
 * `environment` when a role bound everywhere allows `action`, else one environment where a role does.
 */
export function readerQuery(ctx, action) {
  if (ctx.canGlobal(action)) return {};
  const env = ctx.envsWhere(action)[0];
  return env ? { environment: env } : null;
}

/** The environments the user may read (details: tier, order, what is active), in promotion order. */
export async function environments(ctx) {
  const names = ctx.envsWhere("environment.read");
  const details = await Promise.all(names.map((n) => api(`/api/environments/${encodeURIComponent(n)}`)));
  return details.sort((a, b) => a.position - b.position);
}

/** Publish requests the user may see, newest first (per environment when their roles are bound per environment). */
export async function publishRequests(ctx) {
  if (ctx.canGlobal("release.read")) return api("/api/publish-requests");
  const lists = await Promise.all(ctx.envsWhere("release.read").map((environment) => api("/api/publish-requests",
    { query: { environment } })));
  const byId = new Map(lists.flat().map((r) => [r.id, r]));
  return [...byId.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
}

/** Every stored bundle (if the user may read them), newest first, and an index by digest. */
export async function bundleIndex(ctx) {
  const query = readerQuery(ctx, "bundle.read");
  if (!query) return { list: [], byDigest: new Map(), agents: [] };
  const list = await api("/api/bundles", { query });
  const agents = [...new Set(list.map((b) => b.agent))].sort();
  return { list, byDigest: new Map(list.map((b) => [b.digest, b])), agents };
}

/** "1.1.0 (sha256 12 hex)" for a digest, or just the digest when its bundle is unknown. */
export function version(index, d) {
  if (!d) return "—";
  const bundle = index.byDigest.get(d);
  return h("span", { class: "version" }, bundle ? h("strong", {}, bundle.version) : null, bundle ? " " : null, digest(d));
}

const USER_REF = /^(?:user:)?([0-9a-f]{8,64})(\/token:(\w+))?$/;

/** The user id in a user id or an audit actor ("user:ID", "user:ID/token:ID"), else null. */
export function userIdOf(ref) {
  const m = USER_REF.exec(ref || "");
  return m ? m[1] : null;
}

/**
 * Learn the user names behind user ids (or audit actors) before showing them: names the API already
 * gave (`known`: id → name), then GET /api/people for the rest. Without a name, the id is shown.
 */
export async function knowPeople(ctx, refs, known = {}) {
  for (const [id, name] of Object.entries(known)) if (id && name) ctx.people.set(id, name);
  const missing = [...new Set([...refs].map(userIdOf).filter((id) => id && id !== ctx.me.id && !ctx.people.has(id)))];
  for (let i = 0; i < missing.length; i += 100) {
    try {
      const { names } = await api("/api/people", { query: { ids: missing.slice(i, i + 100).join(",") } });
      for (const [id, name] of Object.entries(names)) ctx.people.set(id, name);
    } catch (_) {
      return; // the ids are shown instead
    }
  }
}

/**
 * How to name a user id: "you", their user name, or (when the name is unknown) a short id. The
 * whole id is in the tooltip and in data-user-id. `name`: the user name, when the API gave it.
 */
export function who(ctx, userId, name) {
  if (!userId) return "—";
  const known = name || ctx.people.get(userId);
  if (name) ctx.people.set(userId, name);
  if (userId === ctx.me.id) {
    return h("span", { class: "person", title: `you (${ctx.me.username}), user id ${userId}`, "data-user-id": userId }, "you");
  }
  if (known) return h("span", { class: "person", title: `user id ${userId}`, "data-user-id": userId }, known);
  return h("code", { class: "person", title: `user id ${userId}`, "data-user-id": userId }, `user ${String(userId).slice(0, 8)}`);
}

/** An audit actor ("user:ID", "user:ID/token:ID", "caller", "system") with the user's name when known. */
export function actor(ctx, text) {
  const m = USER_REF.exec(text || "");
  if (!m || !/^user:/.test(text)) return h("code", {}, text);
  return h("span", { title: text }, who(ctx, m[1]), m[2] ? " (API token)" : "");
}

/** An outcome as {text, kind}: `success` is its text, or a function of the result giving the text or {text, kind}. */
function outcome(success, result) {
  const said = typeof success === "function" ? success(result) : success;
  return typeof said === "string" ? { text: said, kind: "ok" } : said;
}

/**
 * Run an API action from a button: disable it while it runs, then show the outcome in `out`
 * (an element with aria-live) and announce it. Returns the result, or undefined on failure.
 */
export async function act(ctx, button, out, fn, success) {
  if (button) button.disabled = true;
  clear(out);
  try {
    const result = await fn();
    const { text, kind } = outcome(success, result);
    out.append(message(text, kind));
    ctx.announce(text);
    return result;
  } catch (err) {
    const why = err.denied ? `Refused by policy (${err.denied}): ${err.message}` : err.message;
    out.append(message(why, "error"));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

let flash = null; // the outcome of the last action, shown once the page has re-rendered

/** act(), then re-render the page with the outcome on top (for changes that alter what the page shows). */
export async function actAndRefresh(ctx, button, out, fn, success) {
  const result = await act(ctx, button, out, fn, success);
  if (result !== undefined) {
    flash = outcome(success, result);
    ctx.refresh();
  }
  return result;
}

/** Show (once) the outcome of the action that caused this render. */
export function showFlash(view) {
  if (flash) {
    view.append(message(flash.text, flash.kind));
    flash = null;
  }
}

export function outlet() {
  return h("div", { class: "outlet", "aria-live": "polite" });
}

export function envSelect(ctx, value, names) {
  const options = (names || ctx.envNames).map((n) => [n, n]);
  return select(options, value && options.some(([v]) => v === value) ? value : options[0]?.[0]);
}

export { message };
