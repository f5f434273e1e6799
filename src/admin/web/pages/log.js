// The live log over WS /api/events: a minimum level, pause, search. The
// connection belongs to the whole panel (lib/events.js), so lines that came
// while another page was open are here too.
import { html, useState, useEffect, useRef } from "../lib/html.js";
import * as events from "../lib/events.js";

const LEVELS = ["trace", "debug", "info", "warning", "error", "critical"];
const rank = (level) => { const i = LEVELS.indexOf(level === "warn" ? "warning" : level); return i < 0 ? 2 : i; };

function describe(event) {
  if (event.type === "log") return { level: event.level, label: event.level, text: event.line };
  if (event.type === "component")
    return { level: event.state === "failed" ? "error" : "info", label: "component",
             text: `component ${event.name} is ${event.state}${event.listen ? ` on ${event.listen}` : ""}${event.last_error ? ` (${event.last_error})` : ""}` };
  if (event.type === "config")
    return { level: "info", label: "config", text: `configuration generation ${event.generation} applied: ${(event.changed || []).join(", ") || "no changes"}` };
  return { level: "debug", label: event.type || "event", text: JSON.stringify(event) };
}

export function Log() {
  const [lines, setLines] = useState(() => events.history());
  const [paused, setPaused] = useState(false);
  const [minimum, setMinimum] = useState("debug");
  const [search, setSearch] = useState("");
  const [connection, setConnection] = useState({ ...events.state });
  const held = useRef([]);  // lines that came while paused
  const [waiting, setWaiting] = useState(0);
  const pausedRef = useRef(false);
  const list = useRef(null);
  const stick = useRef(true);

  useEffect(() => events.watchState(setConnection), []);
  useEffect(() => events.subscribe((event) => {
    if (pausedRef.current) { held.current.push(event); setWaiting(held.current.length); return; }
    setLines((old) => { const next = old.concat(event); return next.length > 2000 ? next.slice(-2000) : next; });
  }), []);
  useEffect(() => {
    const el = list.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  });

  function togglePause() {
    const next = !paused;
    pausedRef.current = next;
    setPaused(next);
    if (!next && held.current.length) {
      const more = held.current;
      held.current = [];
      setWaiting(0);
      setLines((old) => old.concat(more).slice(-2000));
    }
  }

  const needle = search.trim().toLowerCase();
  const shown = lines.map((e) => ({ e, d: describe(e) }))
    .filter(({ d }) => rank(d.level) >= rank(minimum) && (!needle || d.text.toLowerCase().includes(needle)));

  return html`
    <div class="toolbar">
      <label>Level <select value=${minimum} onChange=${(e) => setMinimum(e.currentTarget.value)}>
        ${LEVELS.map((l) => html`<option value=${l}>${l} and above</option>`)}</select></label>
      <label>Search <input type="search" value=${search} onInput=${(e) => setSearch(e.currentTarget.value)} /></label>
      <button type="button" aria-pressed=${paused} onClick=${togglePause}>
        ${paused ? `Resume (${waiting} waiting)` : "Pause"}</button>
      <button type="button" class="quiet" onClick=${() => setLines([])}>Clear</button>
    </div>
    <p class=${`connection ${connection.connected ? "ok" : "warn"}`} role="status" data-testid="log-connection">
      ${connection.connected ? "Connected: new lines appear as they happen." : `Not connected: ${connection.note}`}</p>
    <ol class="log" ref=${list} aria-label="Log lines" tabindex="0"
      onScroll=${(e) => { const el = e.currentTarget; stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40; }}>
      ${shown.map(({ e, d }) => html`<li key=${e.id} class=${`lvl-${rank(d.level)}${e.panel ? " panel-note" : ""}`}>
        <span class="lvl">${d.label}</span> <span class="text">${d.text}</span></li>`)}
    </ol>
    <p class="muted">${shown.length} of ${lines.length} line(s) shown.</p>`;
}
