// The supervisor's tasks (GET /api/tasks), refreshed every two seconds, each
// with a cancel button (POST /api/tasks/<id>/cancel) that asks once more.
import { html, useState, useEffect } from "../lib/html.js";
import { request, formatAge } from "../lib/api.js";

export function Tasks() {
  const [tasks, setTasks] = useState(null);
  const [error, setError] = useState("");
  const [filter, setFilter] = useState("");
  const [confirming, setConfirming] = useState(null);
  const [message, setMessage] = useState("");

  async function refresh() {
    const res = await request("/api/tasks");
    if (res.ok) { setTasks(res.data.tasks); setError(""); } else setError(res.message);
  }
  useEffect(() => { refresh(); const t = setInterval(refresh, 2000); return () => clearInterval(t); }, []);

  async function cancel(task) {
    setConfirming(null);
    const res = await request(`/api/tasks/${task.id}/cancel`, { method: "POST" });
    setMessage(res.ok ? `Asked task ${task.id} (${task.name}) to stop.` : `Could not cancel task ${task.id}: ${res.message}`);
    refresh();
  }

  if (!tasks) return html`<p role="status">${error || "Loading…"}</p>`;
  const needle = filter.trim().toLowerCase();
  const shown = tasks.filter((t) => !needle || `${t.name} ${t.group}`.toLowerCase().includes(needle));
  return html`
    <div class="toolbar">
      <label>Filter <input type="search" value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)} /></label>
      <span class="muted">${shown.length} of ${tasks.length} task(s)</span>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <p role="status" aria-live="polite">${message}</p>
    <div class="table-wrap">
      <table>
        <thead><tr><th>Id</th><th>Name</th><th>Group</th><th>Age</th><th><span class="sr-only">Action</span></th></tr></thead>
        <tbody>${shown.map((t) => html`
          <tr key=${t.id} data-task=${t.id}>
            <td>${t.id}</td><td class="wrap">${t.name}</td><td>${t.group}</td><td>${formatAge(t.age_ms)}</td>
            <td class="actions">${t.cancel_requested ? html`<span class="muted">stopping…</span>`
              : confirming === t.id
                ? html`<button type="button" class="danger" ref=${(el) => el?.focus()} onClick=${() => cancel(t)}>Confirm cancel</button>
                       <button type="button" class="quiet" onClick=${() => setConfirming(null)}>Keep</button>`
                : html`<button type="button" onClick=${() => setConfirming(t.id)} aria-label=${`Cancel task ${t.id}: ${t.name}`}>Cancel</button>`}</td>
          </tr>`)}</tbody>
      </table>
    </div>`;
}
