// Calls to the voxgate API from the console. The sign-in cookie is HttpOnly and SameSite=Strict;
// every state-changing request also carries X-Voxgate-CSRF, without which the server ignores the cookie.

export class ApiError extends Error {
  constructor(status, detail, denied) {
    super(describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.denied = denied; // the action a policy refused (X-Voxgate-Denied), if that is why
  }
}

function describe(detail) {
  if (!detail) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg ? `${(d.loc || []).slice(1).join(".")}: ${d.msg}` : JSON.stringify(d))).join("; ");
  }
  if (detail.error) {
    const problems = Array.isArray(detail.problems) ? `: ${detail.problems.map(describe).join("; ")}` : "";
    return `${detail.error}${detail.rule ? ` (${detail.rule})` : ""}${problems}`;
  }
  return JSON.stringify(detail);
}

/** fetch + JSON; throws ApiError with the server's explanation on any non-2xx answer. */
export async function api(path, { method = "GET", body, text = false, query } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-Voxgate-CSRF"] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const response = await fetch(url, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const data = await response.json();
      detail = data.detail ?? data;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail, response.headers.get("X-Voxgate-Denied"));
  }
  if (response.status === 204) return null;
  return text ? response.text() : response.json();
}

export const enc = encodeURIComponent;
