// The browser phone (phone.html): call an agent of this worker with the microphone over the native
// voice socket (/ws/voice/AGENT), hear it, key digits. The controls follow the call: Call only when
// ready, Hang up and the keypad only during a call; after a call the page is ready for the next one.

"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let audio = null;
let stream = null;
let node = null;
let playHead = 0;
let sources = [];
let phase = "loading"; // loading | idle | connecting | connected
let callNo = 0; // which call the callbacks belong to (a late callback of an ended call changes nothing)
let outcome = null;

function status(text) {
  $("status").textContent = text;
}

/** Enable exactly the controls that do something in this phase. */
function setPhase(next) {
  phase = next;
  $("status").dataset.state = next;
  $("call").disabled = next !== "idle" || !$("agent").value;
  $("hangup").disabled = next !== "connecting" && next !== "connected";
  $("agent").disabled = next === "connecting" || next === "connected";
  for (const key of $("keypad").querySelectorAll("button")) key.disabled = next !== "connected";
}

function say(cls, text) {
  const d = document.createElement("div");
  d.className = `msg ${cls}`;
  d.textContent = text;
  $("log").appendChild(d);
  $("log").scrollTop = $("log").scrollHeight;
}

function clearPlayback() {
  for (const s of sources) {
    try { s.stop(); } catch (_) { /* already stopped */ }
  }
  sources = [];
  playHead = audio ? audio.currentTime : 0;
}

function play(int16) {
  const f = new Float32Array(int16.length);
  for (let i = 0; i < int16.length; i++) f[i] = int16[i] / 32768;
  const buf = audio.createBuffer(1, f.length, audio.sampleRate);
  buf.copyToChannel(f, 0);
  const src = audio.createBufferSource();
  src.buffer = buf;
  src.connect(audio.destination);
  playHead = Math.max(playHead, audio.currentTime + 0.03);
  src.start(playHead);
  playHead += buf.duration;
  sources.push(src);
  src.onended = () => { sources = sources.filter((s) => s !== src); };
}

/** Release the microphone and the audio, and make the page ready for the next call. */
function finish(text) {
  callNo += 1;
  ws = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (node) {
    node.port.onmessage = null;
    try { node.disconnect(); } catch (_) { /* not connected */ }
  }
  node = null;
  clearPlayback();
  if (audio) audio.close().catch(() => {});
  audio = null;
  $("level").value = 0;
  setPhase("idle");
  status(text || (outcome ? `Call ended (${outcome}). Ready to call again.` : "Call ended. Ready to call again."));
}

async function call() {
  const mine = ++callNo;
  outcome = null;
  setPhase("connecting");
  status("Connecting…");
  audio = new AudioContext();
  stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 } });
  if (mine !== callNo) { // hung up while the browser asked for the microphone
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  await audio.audioWorklet.addModule("/static/phone-worklet.js");
  if (mine !== callNo) return;
  const mic = audio.createMediaStreamSource(stream);
  node = new AudioWorkletNode(audio, "capture-processor");
  mic.connect(node);
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${proto}://${location.host}/ws/voice/${encodeURIComponent($("agent").value)}`);
  ws = socket;
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    if (socket !== ws) return;
    socket.send(JSON.stringify({ type: "start", sample_rate: audio.sampleRate, encoding: "pcm16" }));
    node.port.onmessage = (ev) => {
      if (socket.readyState === 1) socket.send(ev.data);
      const a = new Int16Array(ev.data);
      let peak = 0;
      for (const v of a) peak = Math.max(peak, Math.abs(v));
      $("level").value = peak / 32768;
    };
    setPhase("connected");
    status(`Connected at ${audio.sampleRate} Hz.`);
  };
  socket.onmessage = (ev) => {
    if (socket !== ws) return; // a call that has ended
    if (typeof ev.data !== "string") {
      play(new Int16Array(ev.data));
      return;
    }
    const m = JSON.parse(ev.data);
    if (m.type === "transcript") say(m.role === "user" ? "user" : "agent", m.text);
    else if (m.type === "clear") clearPlayback();
    else if (m.type === "mark") {
      const delay = Math.max(0, (playHead - audio.currentTime) * 1000);
      setTimeout(() => { if (socket === ws && socket.readyState === 1) socket.send(JSON.stringify({ type: "mark", name: m.name })); }, delay);
    } else if (m.type === "ended") {
      outcome = m.outcome || m.reason || null;
      status(`Call ended${outcome ? ` (${outcome})` : ""}.`);
    } else if (m.type === "error") status(`Error: ${m.error}`);
  };
  socket.onclose = () => { if (socket === ws) finish(); };
}

function hangup() {
  const socket = ws;
  if (socket && socket.readyState === 1) socket.send(JSON.stringify({ type: "stop" }));
  finish();
  if (socket) setTimeout(() => socket.close(), 2000); // the server ends the conversation first
}

for (const k of "123456789*0#") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = k;
  b.setAttribute("aria-label", `Key ${k}`);
  b.disabled = true;
  b.onclick = () => { if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "dtmf", digit: k })); };
  $("keypad").appendChild(b);
}
$("call").onclick = () => call().catch((e) => finish(`Could not start: ${e.message}. Ready to try again.`));
$("hangup").onclick = () => hangup();
$("agent").onchange = () => setPhase(phase);

fetch("/api/agents").then((r) => r.json()).then((agents) => {
  for (const a of agents) {
    const o = document.createElement("option");
    o.value = a.name;
    o.textContent = a.display_name || a.name;
    $("agent").appendChild(o);
  }
  const wanted = new URLSearchParams(location.search).get("agent"); // /phone?agent=NAME (the console links so)
  if (wanted && agents.some((a) => a.name === wanted)) $("agent").value = wanted;
  setPhase("idle");
  status(agents.length ? "Ready." : "No agent is served here right now.");
}).catch((e) => {
  setPhase("idle");
  status(`Could not list the agents: ${e.message}`);
});

// a worker that serves agent directories as they are (not a signed release) says so
fetch("/health").then((r) => r.json()).then((health) => {
  if (health.mode !== "development") return;
  const served = (health.served || []).map((s) => `${s.agent} ${s.version}`).join(", ");
  const banner = $("dev-banner");
  banner.textContent = "";
  const strong = document.createElement("strong");
  strong.textContent = "Development mode.";
  banner.append(strong, ` This worker serves unreleased development builds from agent directories${served ? ` (${served})` : ""}, `
    + "not signed releases.");
  banner.hidden = false;
}).catch(() => { /* no banner: the worker did not say */ });
