// Conversations (GET /api/sessions, newest first, 50 a page) and one
// conversation's messages (GET /api/sessions/<user>/messages, older ones on
// demand) with seq, role, time and delivery state.
import { html, useState, useEffect } from "../lib/html.js";
import { request, formatTime } from "../lib/api.js";

const PAGE = 50;

export function Conversations() {
  const [offset, setOffset] = useState(0);
  const [sessions, setSessions] = useState(null);
  const [error, setError] = useState("");
  const [search, setSearch] = useState("");
  const [open, setOpen] = useState(null);  // the session shown

  useEffect(() => {
    let alive = true;
    request(`/api/sessions?limit=${PAGE + 1}&offset=${offset}`).then((res) => {
      if (!alive) return;
      if (res.ok) { setSessions(res.data.sessions); setError(""); } else setError(res.message);
    });
    return () => { alive = false; };
  }, [offset]);

  if (open) return html`<${Messages} session=${open} onBack=${() => setOpen(null)} />`;
  if (!sessions) return html`<p role="status">${error || "Loading…"}</p>`;
  const needle = search.trim().toLowerCase();
  const page = sessions.slice(0, PAGE);
  const shown = page.filter((s) => !needle || s.user_id.toLowerCase().includes(needle));
  return html`
    <div class="toolbar">
      <label>Search this page <input type="search" value=${search} onInput=${(e) => setSearch(e.currentTarget.value)} /></label>
      <button type="button" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>Newer</button>
      <span class="muted">${page.length ? `${offset + 1}–${offset + page.length}` : "none"}</span>
      <button type="button" disabled=${sessions.length <= PAGE} onClick=${() => setOffset(offset + PAGE)}>Older</button>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="table-wrap">
      <table>
        <thead><tr><th>User</th><th>Last seen</th><th>Started</th><th>Delivered up to</th></tr></thead>
        <tbody>${shown.map((s) => html`<tr key=${s.user_id}>
          <td><button type="button" class="link mono" onClick=${() => setOpen(s)}>${s.user_id}</button></td>
          <td>${formatTime(s.last_seen_ms)}</td><td>${formatTime(s.created_ms)}</td><td>seq ${s.delivered_seq}</td></tr>`)}
        </tbody>
      </table>
    </div>
    ${shown.length === 0 && html`<p class="muted">No conversations${needle ? " match" : " yet"}.</p>`}`;
}

function Messages({ session, onBack }) {
  const [messages, setMessages] = useState([]);
  const [more, setMore] = useState(true);
  const [error, setError] = useState("");

  async function fetchBefore(before) {
    const query = `limit=${PAGE}${before ? `&before=${before}` : ""}`;
    const res = await request(`/api/sessions/${encodeURIComponent(session.user_id)}/messages?${query}`);
    if (!res.ok) { setError(res.message); return; }
    setMore(res.data.more ?? res.data.messages.length === PAGE);
    setMessages((old) => res.data.messages.concat(before ? old : []));
  }
  useEffect(() => { fetchBefore(0); }, [session.user_id]);

  const delivery = (m) => m.role === "user" ? m.status
    : m.seq <= session.delivered_seq ? "delivered" : m.status;
  return html`
    <div class="toolbar">
      <button type="button" onClick=${onBack}>← All conversations</button>
      <span class="mono">${session.user_id}</span>
      ${more && messages.length > 0 && html`<button type="button" onClick=${() => fetchBefore(messages[0].seq)}>Load older</button>`}
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <ol class="messages">${messages.map((m) => html`
      <li key=${m.seq} class=${`msg ${m.role}`}>
        <div class="meta"><span>#${m.seq}</span> <span>${m.role}</span> <time>${formatTime(m.created_ms)}</time>
          <span class="state">${delivery(m)}</span>${m.reply_to ? html` <span>reply to #${m.reply_to}</span>` : ""}</div>
        <div class="body">${m.content}</div>
        ${m.images.length > 0 && html`<div class="muted">${m.images.length} image(s)</div>`}
      </li>`)}</ol>
    ${messages.length === 0 && !error && html`<p class="muted">No messages.</p>`}`;
}
