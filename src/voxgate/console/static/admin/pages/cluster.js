// Cluster: the workers up now (address, version, calls, sockets not started, chats, CPU load, whether
// each drains) and, per environment, calls in progress and today's calls against the limits.

import { api } from "../api.js";
import { badge, clear, facts, h, message, table, time } from "../dom.js";

const limit = (value, max) => (max === null || max === undefined ? `${value} (no limit)` : `${value} of ${max}`);

export default {
  path: "cluster",
  title: "Cluster",
  read: "cluster.read",
  scope: "worker",
  async render(view, ctx) {
    const body = h("div", { "aria-live": "polite" });
    const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
    const load = async (said) => {
      clear(body);
      try {
        const data = await api("/api/cluster");
        body.append(h("div", { class: "panel" }, facts([
          ["Mode", data.mode === "cluster" ? "a cluster sharing live state through Redis" : "a single worker"],
          ["Redis", data.redis ? h("code", {}, data.redis) : "none"],
          ["Answered by", data.worker ? h("code", {}, data.worker.slice(0, 12)) : "—"],
        ])));
        body.append(h("section", { "aria-labelledby": "cl-env-h" }, h("h2", { id: "cl-env-h" }, "Environments"),
          table({
            caption: "Calls per environment against its limits", hideCaption: true, empty: "No worker is up.",
            rows: data.environments,
            rowAttrs: (e) => ({ "data-cluster-env": e.environment }),
            columns: [
              { label: "Environment", key: "environment" },
              { label: "Workers", key: "workers", num: true },
              { label: "Draining", key: "draining", num: true },
              { label: "Capacity", key: "capacity", num: true },
              { label: "Calls now", value: (e) => limit(e.active_calls, e.max_concurrent_calls), num: true },
              { label: "Calls today (UTC)", value: (e) => limit(e.calls_today, e.max_calls_per_day), num: true },
            ],
          })));
        body.append(h("section", { "aria-labelledby": "cl-w-h" }, h("h2", { id: "cl-w-h" }, "Workers"),
          table({
            caption: "Workers that announced themselves in the last few heartbeats", hideCaption: true,
            empty: "No worker is up.",
            rows: data.workers,
            rowAttrs: (w) => ({ "data-worker": w.id }),
            columns: [
              { label: "Worker", value: (w) => h("code", { title: w.id }, w.id.slice(0, 12)) },
              { label: "Environment", key: "environment" },
              { label: "Address", value: (w) => h("code", {}, w.url) },
              { label: "State", value: (w) => (w.draining ? badge("draining", "warn") : badge("serving", "ok")) },
              { label: "Calls", value: (w) => `${w.active_calls} of ${w.capacity}`, num: true },
              { label: "Sockets waiting", key: "pending_sockets", num: true },
              { label: "Chats", key: "live_sessions", num: true },
              { label: "CPU", value: (w) => `${w.load.toFixed(1)}%`, num: true },
              { label: "Version", key: "version" },
              { label: "Started", value: (w) => time(w.started_at) },
              { label: "Last heard", value: (w) => time(w.seen_at) },
            ],
          })));
        if (said) ctx.announce(`${data.workers.length} worker${data.workers.length === 1 ? "" : "s"} up.`);
      } catch (err) {
        body.append(message(err.message, "error"));
      }
    };
    refresh.addEventListener("click", () => load(true));
    view.append(h("p", { class: "lede" }, "Each worker announces itself with every heartbeat; one that stops is dropped ",
      "after a few missed heartbeats. Calls today count from midnight UTC."), h("div", { class: "row" }, refresh), body);
    await load(false);
  },
};
