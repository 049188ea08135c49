// Small helpers to build the console's DOM. Text always goes in as text (never as HTML), so data
// from the server cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";
let counter = 0;

/** A unique element id with a readable prefix (labels point at inputs by id). */
export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" && "value" in el) el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("button", {type: "button", onclick}, "Save"). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** A labelled form control: returns {wrap, control}. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  const wrap = h("div", { class: "field" }, h("label", { for: control.id }, label), control);
  if (hint) {
    const hintEl = h("small", { id: uid("hint"), class: "hint" }, hint);
    control.setAttribute("aria-describedby", hintEl.id);
    wrap.append(hintEl);
  }
  return wrap;
}

/** A <select> from [value, label] pairs (or plain strings). */
export function select(options, value, attrs = {}) {
  const el = h("select", attrs);
  for (const option of options) {
    const [v, label] = Array.isArray(option) ? option : [option, option];
    el.append(h("option", { value: v, selected: v === value }, label));
  }
  if (value !== undefined) el.value = value;
  return el;
}

/**
 * A data table: columns are {label, value(row) → Node|string, num?: true, key?: string, cls?: string}.
 * `caption` names the table for screen readers (visually hidden when `hideCaption`).
 */
export function table({ caption, columns, rows, empty = "Nothing to show.", hideCaption = false, rowAttrs }) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  const cls = (c) => [c.num ? "num" : null, c.cls || null].filter(Boolean).join(" ") || null;
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: cls(c) }, c.label))));
  const tbody = h("tbody", {}, rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map((c) => {
    const value = c.value ? c.value(row) : row[c.key];
    return h("td", { class: cls(c) }, value === null || value === undefined ? "—" : value);
  }))));
  const cap = caption ? h("caption", { class: hideCaption ? "sr-only" : null }, caption) : null;
  return h("div", { class: "table-wrap" }, h("table", {}, cap, thead, tbody));
}

/** A status badge whose text says the status (colour is never the only signal). */
export function badge(text, kind) {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}

export function message(text, kind = "info") {
  return h("div", { class: `message ${kind}`, role: kind === "error" ? "alert" : null }, text);
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k),
    h("dd", {}, v === null || v === undefined || v === "" ? "—" : v)]));
}

// ---- formatting ----

const pad = (n) => String(n).padStart(2, "0");
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** "2026-11-26 18:03" in the browser's time zone. */
export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function shortTime(d, withDate) {
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDate ? `${d.getDate()} ${MONTHS[d.getMonth()]} ${hm}` : hm;
}

export function day(d) {
  return `${d.getDate()} ${MONTHS[d.getMonth()]}`;
}

export function pct(x, digits = 0) {
  return x === null || x === undefined ? "—" : `${(x * 100).toFixed(digits)} %`;
}

export function ms(x) {
  return x === null || x === undefined ? "—" : `${Math.round(x)} ms`;
}

export function num(x) {
  return x === null || x === undefined ? "—" : String(x);
}

/** The first 12 hex digits of a digest (the whole digest in its tooltip). */
export function digest(d) {
  if (!d) return "—";
  const short = d.replace(/^sha256:/, "").slice(0, 12);
  return h("code", { title: d }, short);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}
