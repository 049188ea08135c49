// The voxgate admin console: sign-in, navigation and hash routing (#/releases, #/analytics, …).
// Each page is a module under pages/ that renders into the main landmark; every action it offers
// goes through the API, whose policies decide. Pages and buttons the signed-in user's roles do not
// allow are hidden (the list comes from /api/me/permissions, decided by the server's own engine).

import { api } from "./api.js";
import { clear, field, h, message } from "./dom.js";
import agents from "./pages/agents.js";
import analytics from "./pages/analytics.js";
import audit from "./pages/audit.js";
import cluster from "./pages/cluster.js";
import dlp from "./pages/dlp.js";
import environments from "./pages/environments.js";
import gates from "./pages/gates.js";
import incidents from "./pages/incidents.js";
import phone from "./pages/phone.js";
import releases from "./pages/releases.js";
import transcripts from "./pages/transcripts.js";
import usage from "./pages/usage.js";
import users from "./pages/users.js";

const PAGES = [environments, agents, releases, gates, dlp, users, audit, transcripts, analytics, incidents, usage,
  cluster, phone];

const $ = (id) => document.getElementById(id);
let perms = null;
let renderCount = 0;
let pageJustLoaded = true; // the first view after a page load keeps the browser's own focus (top of the page)

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { route: parts[0] || "", params: parts.slice(1), query: new URLSearchParams(qs || "") };
}

function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  // a change the screen reader notices even when the same text is announced twice
  window.setTimeout(() => { el.textContent = text; }, 30);
}

let people = new Map(); // user id → user name (from the directory, the API's records or GET /api/people)
let health = null; // this worker's GET /health: its environment and whether it serves released bundles

function makeContext() {
  const envs = perms.environments;
  const ctx = {
    perms,
    people,
    health,
    me: perms.user,
    worker: perms.worker_environment,
    envNames: Object.keys(envs),
    can: (action, env) => (envs[env] || []).includes(action),
    canGlobal: (action) => perms.global_actions.includes(action),
    canAnywhere: (action) => perms.global_actions.includes(action) || Object.values(envs).some((a) => a.includes(action)),
    envsWhere: (action) => Object.keys(envs).filter((e) => envs[e].includes(action)),
    announce,
    go: (hash) => { location.hash = hash; },
    refresh: () => route(),
  };
  return ctx;
}

function pageAllowed(page, ctx) {
  if (!page.read) return true;
  if (page.scope === "global") return ctx.canGlobal(page.read);
  if (page.scope === "worker") return ctx.can(page.read, ctx.worker);
  return ctx.canAnywhere(page.read);
}

function rolesText(roles) {
  const parts = [];
  for (const [env, names] of Object.entries(roles)) {
    parts.push(`${names.join(", ")} ${env === "*" ? "everywhere" : `in ${env}`}`);
  }
  return parts.length ? parts.join("; ") : "no roles";
}

function renderChrome(ctx) {
  $("whoami").hidden = false;
  $("whoami-text").textContent = `Signed in as ${ctx.me.username} (${rolesText(ctx.me.roles)})`;
  const list = clear($("nav-list"));
  for (const page of PAGES) {
    if (!pageAllowed(page, ctx)) continue;
    list.append(h("li", {}, h("a", { href: `#/${page.path}`, "data-page": page.path }, page.title)));
  }
  $("nav").hidden = false;
}

function markCurrent(path) {
  for (const link of document.querySelectorAll("#nav-list a")) {
    if (link.dataset.page === path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** The console lives at /console/ (pages are #/… after it): any other address under /console/ is a mistake. */
function atConsoleRoot() {
  return location.pathname === "/console/" || location.pathname === "/console";
}

function notFound(what, back, backText) {
  ++renderCount;
  markCurrent(null);
  const main = clear($("main"));
  const heading = h("h1", { tabindex: "-1" }, "Page not found");
  main.append(heading, h("div", { class: "view", "data-not-found": "" },
    h("p", {}, "There is no console page at ", h("code", {}, what), "."),
    h("p", {}, h("a", { href: back }, backText))));
  document.title = "Page not found — voxgate console";
  if (!pageJustLoaded) heading.focus();
  pageJustLoaded = false;
}

async function route() {
  if (!perms) return;
  const ctx = makeContext();
  const { route: path, params, query } = parseHash();
  const page = PAGES.find((p) => p.path === path);
  if (!page) {
    const first = PAGES.find((p) => pageAllowed(p, ctx)) || phone;
    if (path) {
      notFound(location.hash, `#/${first.path}`, `Go to ${first.title}`);
      return;
    }
    location.replace(`#/${first.path}`);
    return;
  }
  const mine = ++renderCount;
  markCurrent(page.path);
  const main = clear($("main"));
  const heading = h("h1", { tabindex: "-1" }, page.title);
  const view = h("div", { class: "view" });
  main.append(heading, view);
  document.title = `${page.title} — voxgate console`;
  ctx.setHeading = (text) => {
    heading.textContent = text;
    document.title = `${text} — voxgate console`;
  };
  if (!pageJustLoaded) heading.focus(); // after a route change a screen reader hears the new page's name
  pageJustLoaded = false;
  if (!pageAllowed(page, ctx)) {
    view.append(message(`Your roles do not allow this page (it needs the ${page.read} permission).`, "info"));
    return;
  }
  const busy = h("p", { class: "loading", role: "status" }, "Loading…");
  view.append(busy);
  try {
    await page.render(view, ctx, params, query);
  } catch (err) {
    if (mine !== renderCount) return;
    if (err.status === 401) {
      signedOut("Your sign-in has ended. Please sign in again.");
      return;
    }
    view.append(message(err.message || String(err), "error"));
  } finally {
    busy.remove();
  }
}

function signedOut(note) {
  perms = null;
  $("nav").hidden = true;
  $("whoami").hidden = true;
  showSignIn(note);
}

function showSignIn(note) {
  const main = clear($("main"));
  document.title = "Sign in — voxgate console";
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const status = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel signin", novalidate: false },
    h("h1", { tabindex: "-1" }, "Sign in"),
    h("p", { class: "lede" }, "Use your voxgate user name and password. What you can see and do depends on your roles."),
    note ? message(note, "info") : null,
    field("User name", username), field("Password", password),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    try {
      await api("/api/auth/login", { method: "POST", body: { username: username.value, password: password.value } });
      password.value = "";
      pageJustLoaded = false; // the form is gone: focus goes to the page that replaces it
      await boot();
    } catch (err) {
      status.append(message(err.status === 401 ? "Wrong user name or password." : err.message, "error"));
      password.focus();
    }
  });
  main.append(form);
  username.focus();
}

function showDevBanner() {
  const banner = $("dev-banner");
  if (!health || health.mode !== "development") {
    banner.hidden = true;
    return;
  }
  const served = (health.served || []).map((s) => `${s.agent} ${s.version}`).join(", ");
  clear(banner).append(h("strong", {}, "Development mode."),
    ` This worker serves unreleased development builds from agent directories${served ? ` (${served})` : ""}, `,
    "not signed releases.");
  banner.hidden = false;
}

async function loadHealth() {
  try {
    health = await api("/health");
  } catch (_) {
    health = null; // no banner: the worker did not say
  }
  showDevBanner();
}

async function boot() {
  if (!health) await loadHealth();
  if (!atConsoleRoot()) {
    notFound(location.pathname, "/console/", "Go to the console");
    return;
  }
  try {
    perms = await api("/api/me/permissions");
  } catch (err) {
    if (err.status === 401) {
      signedOut();
      return;
    }
    clear($("main")).append(h("h1", {}, "voxgate console"), message(err.message, "error"));
    return;
  }
  people = new Map();
  if (perms.global_actions.includes("user.read")) {
    try {
      for (const u of await api("/api/users")) people.set(u.id, u.username);
    } catch (_) { /* ids are shown instead */ }
  }
  renderChrome(makeContext());
  await route();
}

$("signout").addEventListener("click", async () => {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } finally {
    signedOut("You have signed out.");
  }
});

// the skip link moves focus to the page's content without touching the route
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  const heading = document.querySelector("main h1");
  (heading || $("main")).focus();
});

window.addEventListener("hashchange", () => { route(); });
boot();
