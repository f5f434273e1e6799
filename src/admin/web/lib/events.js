// WS /api/events, shared by every page: log lines, component changes and
// applied configurations. Reconnects by itself with a growing delay (1 s to
// 10 s) and says so, both in its state and as lines of the live log.
import { token } from "./api.js";

const KEEP = 2000;              // events kept for the live log
const events = [];              // oldest first
let nextId = 1;
const listeners = new Set();    // (event) => void
const stateListeners = new Set();
let socket = null;
let retryTimer = 0;
let attempts = 0;
let running = false;
let onTokenRefused = () => {};

export const state = { connected: false, note: "not connected", retryAt: 0 };

function setState(changes) {
  Object.assign(state, changes);
  for (const listener of stateListeners) listener({ ...state });
}

function push(event) {
  event.id = nextId++;
  event.at = event.at || Date.now();
  events.push(event);
  if (events.length > KEEP) events.splice(0, events.length - KEEP);
  for (const listener of listeners) listener(event);
}

// A line of the panel's own, shown in the live log beside the server's.
function note(level, line) { push({ type: "log", level, line, panel: true }); }

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/events?token=${encodeURIComponent(token.get())}`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => {
    if (attempts > 0) note("info", `live events reconnected after ${attempts} attempt(s)`);
    attempts = 0;
    setState({ connected: true, note: "connected", retryAt: 0 });
  };
  ws.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (event && typeof event === "object") push(event);
  };
  ws.onclose = (close) => {
    if (socket !== ws) return;
    socket = null;
    if (!running) return;
    if (close.code === 1008) {
      // The admin token changed on the server: this one is no good any more.
      running = false;
      setState({ connected: false, note: `closed by mooring: ${close.reason || "token refused"}` });
      onTokenRefused(close.reason || "the admin token changed; sign in again");
      return;
    }
    const delay = Math.min(10000, 1000 * 2 ** Math.min(attempts, 4));
    attempts += 1;
    const why = close.code === 1001 ? "mooring is shutting down or the admin moved" :
                `connection lost (code ${close.code})`;
    note("warning", `live events disconnected: ${why}; reconnecting in ${delay / 1000}s`);
    setState({ connected: false, note: `disconnected: ${why}; reconnecting (attempt ${attempts})`,
               retryAt: Date.now() + delay });
    retryTimer = setTimeout(connect, delay);
  };
}

export function start(whenTokenRefused) {
  onTokenRefused = whenTokenRefused || onTokenRefused;
  if (running) return;
  running = true;
  attempts = 0;
  setState({ connected: false, note: "connecting" });
  connect();
}

export function stop() {
  running = false;
  clearTimeout(retryTimer);
  if (socket) socket.close(1000, "signed out");
  socket = null;
  events.length = 0;
  setState({ connected: false, note: "not connected", retryAt: 0 });
}

export function history() { return events.slice(); }
export function subscribe(listener) { listeners.add(listener); return () => listeners.delete(listener); }
export function watchState(listener) {
  stateListeners.add(listener);
  return () => stateListeners.delete(listener);
}
