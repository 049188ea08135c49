// The chat page (chat.html): talks to an agent over /ws/chat/{agent}. A file, not an inline
// script, so the page runs under the console's strict content-security policy.
const log = document.getElementById("log"), details = document.getElementById("details");
const input = document.getElementById("text"), select = document.getElementById("agent");
let ws = null;
function add(cls, text, meta) {
  const div = document.createElement("div"); div.className = "msg " + cls; div.textContent = text;
  if (meta) { const m = document.createElement("div"); m.className = "meta"; m.textContent = meta; div.appendChild(m); }
  log.appendChild(div); log.scrollTop = log.scrollHeight;
}
function connect() {
  if (ws) ws.close();
  log.replaceChildren();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws/chat/${encodeURIComponent(select.value)}`);
  ws.onopen = () => { input.disabled = false; input.focus(); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "turn") {
      const meta = [m.intent && `intent ${m.intent} (${m.confidence})`, m.state,
        ...(m.actions || []).map(a => `${a.name}: ${a.status}`), ...(m.citations || []).map(c => `source ${c}`)]
        .filter(Boolean).join(" · ");
      add("agent", m.agent, meta); details.textContent = JSON.stringify(m, null, 2);
    } else if (m.type === "ended") {
      add("agent", `(conversation ended: ${m.outcome})`); input.disabled = true;
      if (m.escalation) details.textContent = JSON.stringify(m.escalation, null, 2);
    } else if (m.type === "error") { add("agent", `(error: ${m.error})`); }
    else if (m.type === "agent_message") { add("agent", m.text, m.from === "person" ? m.name : null); }
    else if (m.type === "handoff") {
      const says = { waiting: "waiting for a person to take over", connected: `${m.name} has joined`,
                     fallback: "nobody is available", ended: "the person ended the conversation" };
      add("agent", `(${says[m.status] || m.status})`);
    }
  };
  ws.onclose = () => { input.disabled = true; };
}
document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault(); const text = input.value.trim(); if (!text || !ws) return;
  add("user", text); ws.send(JSON.stringify({type: "text", text})); input.value = "";
});
document.getElementById("restart").addEventListener("click", connect);
fetch("/api/agents").then(r => r.json()).then(agents => {
  for (const a of agents) { const o = document.createElement("option"); o.value = a.name; o.textContent = a.display_name || a.name; select.appendChild(o); }
  if (agents.length) connect();
});
select.addEventListener("change", connect);
