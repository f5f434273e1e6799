// The admin API from the browser. The token lives in sessionStorage (gone
// with the tab) and travels only as "Authorization: Bearer"; the events
// WebSocket, which cannot carry headers, is the one place it goes in a URL.
const TOKEN_KEY = "mooring.admin-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

let onUnauthorized = () => {};
// Called with a reason when the server refuses the token (it may have changed).
export function whenUnauthorized(callback) { onUnauthorized = callback; }

// One answer: the status, the ETag, and the body as JSON (when it is) or text.
// Network failures come back as status 0 with the reason in `message`.
export async function request(path, { method = "GET", body, headers = {}, signal, quiet401 } = {}) {
  let res;
  try {
    res = await fetch(path, {
      method, body, signal, cache: "no-store",
      headers: { ...headers, Authorization: `Bearer ${token.get()}` },
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    return { status: 0, ok: false, message: `cannot reach mooring: ${error.message}` };
  }
  const type = res.headers.get("content-type") || "";
  const text = await res.text();
  let data = null;
  if (type.startsWith("application/json")) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  const message = data?.error?.message || (res.ok ? "" : `${res.status} ${res.statusText}`);
  if (res.status === 401 && !quiet401) onUnauthorized(message);
  return { status: res.status, ok: res.ok, etag: res.headers.get("etag"), data, text, message };
}

export const getJson = (path, options) => request(path, options);
export const postJson = (path, value, options = {}) => request(path, {
  ...options, method: "POST", body: value === undefined ? undefined : JSON.stringify(value),
  headers: { "Content-Type": "application/json", ...(options.headers || {}) },
});

// Milliseconds since the epoch as local time, "2026-11-26 11:04:05".
export function formatTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatAge(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// A random id for chat messages (crypto.randomUUID needs a secure context).
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
