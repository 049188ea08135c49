// The browser phone: call an agent of any environment with your microphone. This worker's own
// environment is called right here (the phone page embedded); other environments are served by
// their own workers, linked when their URL is configured (VOXGATE_ENVIRONMENT_URLS).

import { api, enc } from "../api.js";
import { clear, field, h, message, select, table } from "../dom.js";
import { environments } from "./shared.js";

export default {
  path: "phone",
  title: "Browser phone",
  read: null,
  async render(view, ctx) {
    const served = await api("/api/agents");
    const details = await environments(ctx);
    view.append(h("p", { class: "lede" }, "Calls go to the agent as a caller would reach it (anonymous, public channel); ",
      "your browser asks for the microphone when you press Call."));

    const here = h("section", { class: "panel", "aria-labelledby": "here-h" },
      h("h2", { id: "here-h" }, `Call ${ctx.worker} (this worker)`));
    if (!served.length) {
      here.append(message(`No agent is served in ${ctx.worker} right now.`, "info"));
    } else {
      const agent = select(served.map((a) => [a.name, `${a.display_name || a.name} (${a.version})`]), served[0].name);
      const frameBox = h("div", {});
      const open = h("a", { href: `/phone?agent=${enc(agent.value)}`, target: "_blank", rel: "noopener" }, "open the phone in its own tab");
      const show = () => {
        clear(frameBox).append(h("iframe", { class: "phone", src: `/phone?agent=${enc(agent.value)}`,
          title: `Browser phone: ${agent.value} in ${ctx.worker}`, allow: "microphone; autoplay" }));
        open.href = `/phone?agent=${enc(agent.value)}`;
      };
      agent.addEventListener("change", show);
      here.append(h("div", { class: "row" }, field("Agent", agent), h("p", {}, "Or ", open, ".")), frameBox);
      show();
    }
    view.append(here);

    const others = details.filter((e) => !e.served_here);
    if (others.length) {
      view.append(h("section", { "aria-labelledby": "other-h" }, h("h2", { id: "other-h" }, "Other environments"),
        table({
          caption: "Agents active in the other environments", hideCaption: true,
          rows: others.flatMap((e) => (Object.keys(e.active).length ? Object.keys(e.active).map((a) => ({ e, a })) : [{ e, a: null }])),
          columns: [
            { label: "Environment", value: (r) => r.e.name },
            { label: "Agent", value: (r) => r.a || h("span", { class: "empty" }, "none active") },
            { label: "Call", value: (r) => (!r.a ? "—" : r.e.worker_url
              ? h("a", { href: `${r.e.worker_url}/phone?agent=${enc(r.a)}`, target: "_blank", rel: "noopener" }, `Call ${r.a} in ${r.e.name}`)
              : h("span", {}, "its worker's URL is not configured (VOXGATE_ENVIRONMENT_URLS)")) },
          ],
        })));
    }
  },
};
