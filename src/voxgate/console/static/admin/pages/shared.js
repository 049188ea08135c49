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

/** How to name a user id: "you", their user name (for those who may read the directory), or a short id. */
export function who(ctx, userId) {
  if (!userId) return "—";
  if (userId === ctx.me.id) return "you";
  const name = ctx.people.get(userId);
  if (name) return h("span", { title: `user ${userId}` }, name);
  return h("code", { title: userId }, `user ${String(userId).slice(0, 8)}`);
}

/** An audit actor ("user:ID", "user:ID/token:ID", "caller", "system") with the user's name when known. */
export function actor(ctx, text) {
  const m = /^user:([0-9a-f]+)(\/token:(\w+))?$/.exec(text || "");
  if (!m) return h("code", {}, text);
  const name = m[1] === ctx.me.id ? "you" : ctx.people.get(m[1]);
  return h("span", { title: text }, name || h("code", {}, `user:${m[1].slice(0, 8)}`), m[2] ? " (API token)" : "");
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
    const text = typeof success === "function" ? success(result) : success;
    out.append(message(text, "ok"));
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
    flash = typeof success === "function" ? success(result) : success;
    ctx.refresh();
  }
  return result;
}

/** Show (once) the outcome of the action that caused this render. */
export function showFlash(view) {
  if (flash) {
    view.append(message(flash, "ok"));
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
