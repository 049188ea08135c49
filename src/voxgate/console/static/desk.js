// The live-agent desk: sign in, set availability, see the queues, see an offered caller's context
// packet before accepting, talk (voice: microphone and speaker over the desk socket as 16 kHz PCM16;
// chat: text), end the conversation and wrap up with a disposition. A dropped desk socket reconnects
// by itself; a conversation (or wrap-up) in progress comes back as "resumed" within the queue's
// reconnect grace (a reloaded page gets it the same way).
"use strict";
const $ = (id) => document.getElementById(id);
const RATE = 16000;
const REASONS = {
  caller_request: "The caller asked for a person",
  misunderstandings: "The virtual agent did not understand the caller several times",
  verification_failed: "The caller could not be verified",
  action_failed: "A back-end system call failed",
  abusive_language: "The caller used abusive language",
};
let ws = null;
let me = null;
let offer = null;      // the handoff offered to me (its view, with the packet)
let current = null;    // the handoff I accepted
let connected = false;
let muted = false;
let queues = [];
let chosen = new Set();
let retries = 0;          // reconnect attempts since the desk last said hello
let restoreStatus = null; // the availability to ask for again after reconnecting
let signingOut = false;
const MAX_RETRIES = 10;
const audio = { ctx: null, stream: null, node: null, playHead: 0, sources: [] };
const stats = { callerFrames: 0, callerAudible: 0, micFramesSent: 0 };  // for the page's own checks
window.deskStats = stats;

function text(id, value) { $(id).textContent = value; }
function announce(message) { const a = $("announcer"); a.textContent = ""; setTimeout(() => { a.textContent = message; }, 50); }
function show(id, visible) { $(id).hidden = !visible; }

// ---- sign-in -------------------------------------------------------------------------------------
async function boot() {
  const r = await fetch("/api/me");
  if (r.ok) { me = await r.json(); startDesk(); } else { show("signin-view", true); $("username").focus(); }
}
$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  text("signin-error", "");
  const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json", "X-Voxgate-CSRF": "1" },
    body: JSON.stringify({ username: $("username").value, password: $("password").value }) });
  if (!r.ok) { text("signin-error", "Wrong username or password."); $("password").focus(); return; }
  me = await (await fetch("/api/me")).json();
  show("signin-view", false);
  startDesk();
});
$("sign-out").addEventListener("click", async () => {
  signingOut = true;
  if (ws) ws.close();
  await fetch("/api/auth/logout", { method: "POST", headers: { "X-Voxgate-CSRF": "1" } });
  location.reload();
});

// ---- the desk socket -----------------------------------------------------------------------------
function startDesk() {
  show("desk-view", true);
  show("sign-out", true);
  text("who", "Signed in as " + me.username);
  connectDesk();
}

function connectDesk() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  // availability means nothing until the desk has said hello: a change made before would be lost
  $("availability").disabled = true;
  ws = new WebSocket(`${proto}://${location.host}/ws/desk`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { if (connected) play(new Int16Array(ev.data)); return; }
    handle(JSON.parse(ev.data));
  };
  ws.onclose = (ev) => {
    $("availability").disabled = true;
    connected = false;
    if (signingOut) return;
    // refused (sign-in, role, origin), bad input, or signed in elsewhere: reconnecting would not help
    const final = ev.code === 1003 || ev.code === 4000 || (ev.code === 1008 && ev.reason !== "not reading");
    if (final || retries >= MAX_RETRIES) {
      text("agent-status", "Disconnected from the desk" + (ev.reason ? ": " + ev.reason : "") + ". Reload the page to sign in again.");
      stopAudio();
      return;
    }
    if (restoreStatus === null) restoreStatus = $("availability").value;
    const delay = Math.min(5000, 500 * 2 ** retries);
    retries++;
    text("agent-status", "Connection to the desk lost. Reconnecting…");
    if (current) {
      // the caller holds for a while: the conversation comes back if the desk is reached in time
      text("call-status", "Connection lost. Reconnecting; the caller is on hold meanwhile.");
      announce("Connection to the desk lost. Reconnecting; the caller is on hold.");
    }
    setTimeout(connectDesk, delay);
  };
}
function send(message) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(message)); }

function handle(m) {
  switch (m.type) {
    case "hello":
      text("who", "Signed in as " + (m.user.display_name || m.user.username));
      retries = 0;
      setStatus(m.status);
      $("availability").disabled = false;
      text("skills", m.skills.length ? m.skills.join(", ") : "none");
      fillDispositions(m.dispositions);
      renderQueues(m.queues);
      if (current && !m.resuming) {  // back too late: the caller went to the fallback meanwhile
        current = null; connected = false; stopAudio();
        show("wrapup-panel", false); show("conversation", false); show("offer", false); show("idle", true);
        const lost = "The connection was lost for too long: the conversation was closed (a caller still on the line was sent to the fallback).";
        text("idle-text", lost);
        announce(lost);
      }
      if (restoreStatus !== null) {  // after a reconnect: the availability chosen before it
        send({ type: "status", status: restoreStatus, queues: [...chosen] });
        restoreStatus = null;
      }
      break;
    case "resumed": resume(m); break;
    case "queues": renderQueues(m.queues); break;
    case "status":
      setStatus(m.status);
      if (m.reason === "missed_offer") announce("You missed an offered caller and are now away.");
      break;
    case "skills": text("skills", m.skills.length ? m.skills.join(", ") : "none"); break;
    case "offer": showOffer(m.handoff); break;
    case "offer_withdrawn":
      if (offer && offer.id === m.handoff_id) {
        offer = null; show("offer", false); show("idle", true);
        text("idle-text", "The offered caller was withdrawn (" + m.reason.replaceAll("_", " ") + ").");
        announce("The offered caller was withdrawn.");
      }
      break;
    case "accepted": current = offer; offer = null; setStatus("busy"); startConversation(m.channel); break;
    case "accept_failed":
      announce("Could not accept: " + m.reason);
      text("idle-text", "Could not accept: " + m.reason); show("offer", false); show("idle", true); offer = null;
      break;
    case "connected":
      connected = true;
      text("call-status", m.channel === "voice" ? "Connected: you are speaking with the caller." : "Connected: you are chatting with the caller.");
      announce("Connected to the caller.");
      if (m.channel === "chat") $("chat-input").focus();
      break;
    case "caller_message": chatLine("caller", m.text); break;
    case "call_ended": endConversation(m.by); break;
    case "wrapped_up":
      current = null; connected = false;
      show("wrapup-panel", false); show("conversation", false); show("offer", false); show("idle", true);
      text("idle-text", "Wrap-up saved. No caller is offered to you.");
      setStatus(m.status);
      break;
    case "error": announce("Desk error: " + m.error); text("agent-status", "Error: " + m.error); break;
  }
}

function setStatus(status) {
  const labels = { available: "Available: callers can be offered to you.", away: "Away: no callers are offered to you.",
                   busy: "Busy: in a conversation.", wrap_up: "Wrap-up: finish the wrap-up to take the next caller." };
  text("agent-status", labels[status] || status);
  if (status === "available" || status === "away") $("availability").value = status;
}
$("availability").addEventListener("change", () => send({ type: "status", status: $("availability").value, queues: [...chosen] }));

function renderQueues(list) {
  queues = list;
  const body = $("queues").querySelector("tbody");
  body.replaceChildren();
  for (const q of list) {
    const tr = document.createElement("tr");
    const take = document.createElement("td");
    const box = document.createElement("input");
    box.type = "checkbox"; box.id = "take-" + q.name; box.checked = chosen.has(q.name);
    box.setAttribute("aria-label", "Take callers from queue " + q.name);
    box.addEventListener("change", () => {
      if (box.checked) chosen.add(q.name); else chosen.delete(q.name);
      send({ type: "status", status: $("availability").value, queues: [...chosen] });
    });
    take.appendChild(box);
    const name = document.createElement("td"); name.textContent = q.name; name.title = q.description || "";
    const waiting = document.createElement("td"); waiting.textContent = String(q.waiting);
    const avail = document.createElement("td"); avail.textContent = `${q.desk_available} of ${q.desk_signed_in}`;
    const needs = document.createElement("td"); needs.textContent = q.skills.length ? q.skills.join(", ") : "—";
    tr.append(take, name, waiting, avail, needs);
    body.appendChild(tr);
  }
}

function fillDispositions(list) {
  const sel = $("disposition");
  sel.replaceChildren();
  for (const d of list) { const o = document.createElement("option"); o.value = d; o.textContent = d.replaceAll("_", " "); sel.appendChild(o); }
}

// ---- an offered caller: the context packet before accepting ---------------------------------------
function showOffer(h) {
  offer = h;
  renderPacket(h);
  text("offer-state", "Incoming");
  show("idle", false); show("offer", true); show("offer-actions", true);
  $("offer").classList.add("incoming");
  const p = h.packet || {};
  announce(`Incoming ${h.channel === "voice" ? "voice call" : "chat"} from queue ${h.queue}. ${p.summary || ""}`);
}

function renderPacket(h) {
  const p = h.packet || {};
  const id = p.identity || {};
  const verified = p.verified !== undefined ? p.verified : !!id.verified;
  text("p-channel", h.channel === "voice" ? "voice call" : "chat");
  text("p-queue", h.queue);
  text("p-caller", id.name || (verified ? "Verified caller" : "Unknown caller"));
  const v = $("p-verified");
  v.textContent = verified ? "Verified" + (id.method ? " (" + id.method.replace("+", " and ").replaceAll("_", " ") + ")" : "") : "Not verified";
  v.className = "pill " + (verified ? "yes" : "no");
  text("p-account", id.account_number || "—");
  text("p-reason", REASONS[p.reason] || (p.reason || "—").replaceAll("_", " "));
  const intents = [...new Set((p.intents || []).map((i) => i.intent.replaceAll("_", " ")))];
  text("p-intents", intents.length ? intents.join(", ") : "—");
  const slots = Object.entries(p.slots || {}).map(([k, val]) => `${k.replaceAll("_", " ")}: ${val}`);
  text("p-slots", slots.length ? slots.join("; ") : "—");
  const actions = (p.actions || []).map((a) => `${a.name.replaceAll("_", " ")} (${a.status})`);
  text("p-actions", actions.length ? actions.join(", ") : "—");
  text("p-summary", p.summary || "—");
  text("p-waited", `${Math.round(h.waited_s)} s (the caller's fallback runs after ${h.timeout_s} s)`);
  const list = $("packet-transcript");
  list.replaceChildren();
  for (const line of p.transcript || []) {
    if (!line.text) continue;
    const li = document.createElement("li");
    const role = document.createElement("span"); role.className = "role";
    role.textContent = line.role === "user" ? "Caller:" : "Virtual agent:";
    li.append(role, document.createTextNode(line.text));
    list.appendChild(li);
  }
}

$("accept").addEventListener("click", async () => {
  if (!offer) return;
  const h = offer;
  if (h.channel === "voice") {
    try { await startAudio(); } catch (e) { announce("Microphone unavailable: " + e.message); text("idle-text", "Microphone unavailable: " + e.message); return; }
  }
  send({ type: "accept", handoff_id: h.id });
});
$("decline").addEventListener("click", () => {
  if (!offer) return;
  send({ type: "decline", handoff_id: offer.id });
  offer = null; show("offer", false); show("idle", true); text("idle-text", "Declined. The caller is offered to someone else.");
});

// ---- the conversation ------------------------------------------------------------------------------
function startConversation(channel) {
  show("offer-actions", false);
  text("offer-state", "In conversation:");
  $("offer").classList.remove("incoming");
  show("conversation", true);
  show("voice-controls", channel === "voice");
  show("chat-controls", channel === "chat");
  $("chat-log").replaceChildren();
  text("call-status", "Connecting to the caller…");
  $("hangup").disabled = false;
  $("hangup").focus();
}

// the conversation (or its wrap-up) back after the desk socket dropped or the page was reloaded
function resume(m) {
  const h = m.handoff;
  offer = null; current = h; connected = false;
  renderPacket(h);
  show("idle", false); show("offer", true); show("wrapup-panel", false);
  startConversation(h.channel);
  for (const line of m.lines || []) chatLine(line.from === "person" ? "me" : "caller", line.text);
  setStatus(m.status);
  if (m.state === "wrap_up") { endConversation("resumed"); return; }
  text("call-status", "Reconnected. Connecting to the caller again…");
  announce("Reconnected: your conversation is back.");
  if (h.channel === "voice") {
    startAudio().then(() => { if (audio.ctx && audio.ctx.state !== "running") show("audio-on", true); })
      .catch((e) => { show("audio-on", true); announce("Microphone unavailable: " + e.message); });
  }
}

function endConversation(by) {
  connected = false;
  stopAudio();
  show("audio-on", false);
  const who = by === "caller" ? "The caller ended the conversation." : by === "error" ? "The connection to the caller failed; the caller was sent to the fallback." : by === "resumed" ? "The conversation is over." : "You ended the conversation.";
  text("call-status", who);
  announce(who + (by === "error" ? "" : " Please wrap up."));
  $("hangup").disabled = true;
  if (by === "error") { current = null; show("conversation", false); show("offer", false); show("idle", true); text("idle-text", who); return; }
  show("wrapup-panel", true);
  $("disposition").focus();
}

$("hangup").addEventListener("click", () => send({ type: "hangup" }));
$("audio-on").addEventListener("click", async () => {
  try { await startAudio(); show("audio-on", audio.ctx === null || audio.ctx.state !== "running"); }
  catch (e) { announce("Microphone unavailable: " + e.message); }
});
$("mute").addEventListener("click", () => {
  muted = !muted;
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute" : "Mute";
});
$("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("chat-input").value.trim();
  if (!value || !connected) return;
  send({ type: "message", text: value });
  chatLine("me", value);
  $("chat-input").value = "";
});
function chatLine(who, value) {
  const d = document.createElement("div");
  d.className = "msg " + (who === "me" ? "me" : "caller");
  d.textContent = (who === "me" ? "You: " : "Caller: ") + value;
  $("chat-log").appendChild(d);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}
$("wrapup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!current) return;
  send({ type: "wrap_up", handoff_id: current.id, disposition: $("disposition").value, note: $("note").value });
  $("note").value = "";
});

// ---- audio: 16 kHz PCM16 both ways (the capture worklet is the browser phone's) ----------------------
async function startAudio() {
  if (audio.ctx) { if (audio.ctx.state === "suspended") await audio.ctx.resume(); return; }
  const ctx = new AudioContext({ sampleRate: RATE });
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false, channelCount: 1 } });
  await ctx.audioWorklet.addModule("/static/phone-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "capture-processor");
  const sink = ctx.createGain(); sink.gain.value = 0;  // keeps the capture node pulled, silently
  source.connect(node); node.connect(sink); sink.connect(ctx.destination);
  node.port.onmessage = (ev) => {
    const frame = new Int16Array(ev.data);
    let peak = 0; for (const v of frame) peak = Math.max(peak, Math.abs(v));
    $("mic-level").value = peak / 32768;
    if (connected && !muted && ws && ws.readyState === 1) { ws.send(ev.data); stats.micFramesSent++; }
  };
  Object.assign(audio, { ctx, stream, node, playHead: 0, sources: [] });
  if (ctx.state === "suspended") await ctx.resume();
}

function play(int16) {
  const ctx = audio.ctx;
  if (!ctx) return;
  const f = new Float32Array(int16.length);
  let peak = 0;
  for (let i = 0; i < int16.length; i++) { f[i] = int16[i] / 32768; peak = Math.max(peak, Math.abs(f[i])); }
  $("caller-level").value = peak;
  stats.callerFrames++;
  if (peak > 0.02) stats.callerAudible++;
  const buf = ctx.createBuffer(1, f.length, RATE); buf.copyToChannel(f, 0);
  const src = ctx.createBufferSource(); src.buffer = buf; src.connect(ctx.destination);
  audio.playHead = Math.max(audio.playHead, ctx.currentTime + 0.06); src.start(audio.playHead); audio.playHead += buf.duration;
  audio.sources.push(src); src.onended = () => { audio.sources = audio.sources.filter((s) => s !== src); };
}

function stopAudio() {
  if (audio.stream) audio.stream.getTracks().forEach((t) => t.stop());
  if (audio.ctx) audio.ctx.close();
  Object.assign(audio, { ctx: null, stream: null, node: null, playHead: 0, sources: [] });
  $("mic-level").value = 0;
  $("caller-level").value = 0;
}

boot();
