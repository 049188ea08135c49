// Agents and their versions (signed, content-addressed bundles), where each is active, and the
// diff between any two versions of an agent.

import { api, enc } from "../api.js";
import { badge, clear, digest, field, h, message, select, table, time } from "../dom.js";
import { bundleIndex, environments, knowPeople, readerQuery, who } from "./shared.js";

/** A unified diff as text, with added, removed, hunk and file lines marked (by class and by their +/- sign). */
export function diffView(text, label) {
  if (!text) return message("The two versions have the same content.", "info");
  const pre = h("pre", { class: "diff", tabindex: "0", "aria-label": label });
  for (const line of text.split("\n")) {
    let cls = null;
    if (line.startsWith("+++") || line.startsWith("---") || /^(added|removed|binary file changed):/.test(line)) cls = "file";
    else if (line.startsWith("+")) cls = "add";
    else if (line.startsWith("-")) cls = "del";
    else if (line.startsWith("@@")) cls = "hunk";
    pre.append(cls ? h("span", { class: cls }, line) : `${line}\n`);
  }
  return pre;
}

export default {
  path: "agents",
  title: "Agents and versions",
  read: "bundle.read",
  async render(view, ctx) {
    const [index, envs] = await Promise.all([bundleIndex(ctx), environments(ctx)]);
    await knowPeople(ctx, index.list.map((b) => b.author));
    const activeIn = (d) => envs.filter((e) => Object.values(e.active).includes(d)).map((e) => e.name);
    view.append(h("p", { class: "lede" }, "Each version is a signed bundle identified by the sha256 of its content. ",
      "Build one with ", h("code", {}, "voxgate bundle build"), " and upload it with ", h("code", {}, "voxgate release upload"), "."));
    if (!index.agents.length) {
      view.append(message("No bundles have been uploaded yet.", "info"));
      return;
    }
    for (const agent of index.agents) {
      const versions = index.list.filter((b) => b.agent === agent);
      const headingId = `agent-${agent}`;
      const section = h("section", { class: "panel", "aria-labelledby": headingId }, h("h2", { id: headingId }, agent));
      section.append(table({
        caption: `Versions of ${agent}, newest first`,
        rows: versions,
        columns: [
          { label: "Version", value: (b) => h("strong", {}, b.version) },
          { label: "Digest", value: (b) => digest(b.digest) },
          { label: "Built for", value: (b) => b.built_for },
          { label: "Author", value: (b) => who(ctx, b.author) },
          { label: "Uploaded", value: (b) => time(b.created_at) },
          { label: "Active in", value: (b) => {
            const where = activeIn(b.digest);
            return where.length ? where.map((e) => badge(e, "active")) : h("span", { class: "empty" }, "—");
          } },
        ],
      }));
      if (versions.length > 1) {
        const options = versions.map((b) => [b.digest, `${b.version} (${b.digest.slice(7, 19)})`]);
        const from = select(options, versions[1].digest);
        const to = select(options, versions[0].digest);
        const out = h("div", { "aria-live": "polite" });
        const button = h("button", { type: "submit" }, "Show the differences");
        const form = h("form", { class: "row compare" }, field("From version", from), field("To version", to), button);
        form.addEventListener("submit", async (event) => {
          event.preventDefault();
          clear(out);
          button.disabled = true;
          try {
            const text = await api(`/api/bundles/${enc(from.value)}/diff/${enc(to.value)}`,
              { text: true, query: readerQuery(ctx, "bundle.read") });
            out.append(diffView(text, `Differences in ${agent} between the two versions`));
          } catch (err) {
            out.append(message(err.message, "error"));
          } finally {
            button.disabled = false;
          }
        });
        section.append(h("h3", {}, "Compare two versions"), form, out);
      }
      view.append(section);
    }
  },
};
