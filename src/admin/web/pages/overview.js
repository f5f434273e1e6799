// Every component with its state, last error, next retry and address;
// readiness; live charts from GET /api/status, polled every two seconds.
import { html, useState, useEffect, useRef } from "../lib/html.js";
import { request, formatAge } from "../lib/api.js";
import * as events from "../lib/events.js";
import { Chart } from "../lib/chart.js";

const POLL_MS = 2000;
const POINTS = 150;  // five minutes

export function Overview() {
  const [status, setStatus] = useState(null);
  const [error, setError] = useState("");
  const samples = useRef({ times: [], connections: [], replies: [], tasks: [], rate: [], p50: [], p99: [], last: null });
  const [, setTick] = useState(0);

  useEffect(() => {
    let alive = true;
    let timer = 0;
    const poll = async () => {
      const res = await request("/api/status");
      if (!alive) return;
      if (res.ok && res.data) {
        setStatus(res.data);
        setError("");
        record(samples.current, res.data);
        setTick((t) => t + 1);
      } else {
        setError(res.message);
      }
      timer = setTimeout(poll, POLL_MS);
    };
    poll();
    // A component that changes state is shown at once, not at the next poll.
    const off = events.subscribe((event) => {
      if (event.type === "component" || event.type === "config") { clearTimeout(timer); poll(); }
    });
    return () => { alive = false; clearTimeout(timer); off(); };
  }, []);

  if (!status) return html`<p role="status">${error || "Loading…"}</p>`;
  const s = samples.current;
  const hasRate = s.rate.some((v) => v !== null);
  const hasLatency = s.p50.some((v) => v !== null);
  return html`
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <section class="cards" aria-label="Summary">
      <div class=${`card ${status.ready ? "ok" : "bad"}`}><span>Readiness</span>
        <strong data-testid="readiness">${status.shutting_down ? "shutting down" : status.ready ? "ready" : "not ready"}</strong></div>
      <div class="card"><span>Configuration</span><strong>generation ${status.generation}</strong></div>
      <div class="card"><span>Up for</span><strong>${formatAge(status.uptime_ms)}</strong></div>
      <div class="card"><span>Sessions</span><strong>${status.sessions}</strong></div>
      <div class="card"><span>Task failures</span><strong>${status.task_failures}</strong></div>
    </section>
    <h2>Components</h2>
    <div class="table-wrap">
      <table class="components">
        <thead><tr><th>Name</th><th>State</th><th>Listen address</th><th>Last error</th><th>Next retry</th><th>Starts</th></tr></thead>
        <tbody>
          ${status.components.map((c) => html`
            <tr data-component=${c.name}>
              <th scope="row">${c.name}</th>
              <td><span class=${`state ${c.state}`}>${c.state}</span></td>
              <td class="mono" data-testid=${`listen-${c.name}`}>${c.listen || "—"}</td>
              <td class="wrap">${c.last_error || "—"}</td>
              <td>${c.next_retry || "—"}</td>
              <td>${c.start_attempts}</td>
            </tr>`)}
        </tbody>
      </table>
    </div>
    <h2>Live</h2>
    <div class="charts">
      <${Chart} title="Open connections" times=${s.times} series=${[{ label: "connections", values: s.connections }]} />
      <${Chart} title="Replies in flight" times=${s.times} series=${[{ label: "replies", values: s.replies }]} />
      <${Chart} title="Supervised tasks" times=${s.times} series=${[{ label: "tasks", values: s.tasks }]} />
      ${hasRate && html`<${Chart} title="Messages per second" times=${s.times} series=${[{ label: "messages/s", values: s.rate }]} />`}
      ${hasLatency && html`<${Chart} title="LLM latency" unit="ms" times=${s.times}
        series=${[{ label: "p50", values: s.p50 }, { label: "p99", values: s.p99 }]} />`}
    </div>
    ${!(hasRate && hasLatency) && html`<p class="help">Messages per second and LLM latency appear here
      once messages arrive and replies are made.</p>`}`;
}

function record(s, status) {
  const now = Date.now() / 1000;
  const push = (list, value) => { list.push(value); if (list.length > POINTS) list.shift(); };
  push(s.times, now);
  push(s.connections, status.connections ?? null);
  push(s.replies, status.replies_in_flight ?? null);
  push(s.tasks, status.tasks ?? null);
  let rate = null;
  if (typeof status.messages_total === "number" && s.last && typeof s.last.messages_total === "number")
    rate = Math.max(0, (status.messages_total - s.last.messages_total) / (now - s.last.at));
  push(s.rate, rate);
  push(s.p50, status.llm_latency_ms?.p50 ?? null);
  push(s.p99, status.llm_latency_ms?.p99 ?? null);
  s.last = { at: now, messages_total: status.messages_total };
}
