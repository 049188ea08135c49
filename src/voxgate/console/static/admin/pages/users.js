// Users and their role bindings (per environment, or * for every environment); creating users and
// binding or removing roles for those allowed to manage the directory.

import { api, enc } from "../api.js";
import { badge, field, h, select, table } from "../dom.js";
import { actAndRefresh, outlet, showFlash } from "./shared.js";

const ROLES = ["admin", "maker", "tester", "approver", "operator", "desk_agent", "auditor", "compliance_officer"];

export default {
  path: "users",
  title: "Users and roles",
  read: "user.read",
  scope: "global",
  async render(view, ctx) {
    const users = await api("/api/users");
    const canManage = ctx.canGlobal("user.manage");
    const out = outlet();

    const bindings = (u) => {
      const items = [];
      for (const [env, roles] of Object.entries(u.roles)) {
        for (const role of roles) {
          const label = `${role} ${env === "*" ? "everywhere" : `in ${env}`}`;
          const li = h("li", { "data-binding": `${env}:${role}` }, badge(label, "neutral"));
          if (canManage) {
            const button = h("button", { type: "button", class: "linklike", "aria-label": `Remove ${label} from ${u.username}` }, "remove");
            button.addEventListener("click", async () => {
              await actAndRefresh(ctx, button, out, () => api(`/api/users/${enc(u.id)}/roles`,
                { method: "DELETE", body: { environment: env, role } }), `Removed ${label} from ${u.username}.`);
            });
            li.append(" ", button);
          }
          items.push(li);
        }
      }
      return items.length ? h("ul", { class: "plain" }, items) : h("span", { class: "empty" }, "no roles");
    };

    showFlash(view);
    view.append(h("p", { class: "lede" }, "Roles are bound per environment, or on * for every environment. ",
      "What each role may do is decided by the Cedar policies; separation of duties binds admins too."), out,
    table({
      caption: "Users",
      hideCaption: true,
      rows: users,
      rowAttrs: (u) => ({ "data-user": u.username }),
      columns: [
        { label: "User name", value: (u) => h("strong", {}, u.username) },
        { label: "Display name", value: (u) => u.display_name || "—" },
        { label: "Status", value: (u) => (u.active ? badge("active") : badge("disabled", "bad")) },
        { label: "Roles", value: bindings },
        { label: "Id", value: (u) => h("code", {}, u.id.slice(0, 8)) },
      ],
    }));

    if (!canManage) return;
    const envOptions = [["*", "* (every environment)"], ...ctx.envNames.map((e) => [e, e])];
    const who = select(users.map((u) => [u.id, u.username]));
    const env = select(envOptions, "*");
    const role = select(ROLES, "maker");
    const bindButton = h("button", { type: "submit" }, "Bind role");
    const bind = h("form", { class: "panel" }, h("h2", {}, "Bind a role"),
      h("div", { class: "row" }, field("User", who), field("Environment", env), field("Role", role), bindButton));
    bind.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = who.selectedOptions[0]?.textContent;
      await actAndRefresh(ctx, bindButton, out, () => api(`/api/users/${enc(who.value)}/roles`,
        { method: "POST", body: { environment: env.value, role: role.value } }),
      `Bound ${role.value} ${env.value === "*" ? "everywhere" : `in ${env.value}`} to ${name}.`);
    });

    const username = h("input", { type: "text", required: true, autocomplete: "off" });
    const display = h("input", { type: "text", autocomplete: "off" });
    const password = h("input", { type: "password", required: true, autocomplete: "new-password", minlength: 12 });
    const createButton = h("button", { type: "submit" }, "Create user");
    const create = h("form", { class: "panel" }, h("h2", {}, "Create a user"),
      h("div", { class: "row" }, field("User name", username), field("Display name", display),
        field("Initial password", password, "At least 12 characters; hand it to the user privately."), createButton));
    create.addEventListener("submit", async (event) => {
      event.preventDefault();
      await actAndRefresh(ctx, createButton, out, () => api("/api/users", { method: "POST",
        body: { username: username.value.trim(), password: password.value, display_name: display.value.trim() } }),
      `Created ${username.value.trim()}. Bind a role to let them do anything.`);
    });
    view.append(h("div", { class: "grid2" }, bind, create));
  },
};
