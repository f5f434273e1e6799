// A test chat that talks to the gateway as a user would: ws://<host>:<gateway
// port>/ws/<user>. Messages carry an id (so the gateway acknowledges them with
// their seq); replies stream in as chat_token pieces. The transcript and the
// last reply's seq live in sessionStorage: after a reload of the page the
// panel reconnects and sends {"type":"resume","after":<seq>}.
import { html, useState, useEffect, useRef } from "../lib/html.js";
import { request, randomId } from "../lib/api.js";

const KEY = "mooring.chat";
const load = () => { try { return JSON.parse(sessionStorage.getItem(KEY)) || {}; } catch { return {}; } };
const save = (value) => sessionStorage.setItem(KEY, JSON.stringify(value));

async function gatewayUrl(user, gatewayToken) {
  const res = await request("/api/status");
  if (!res.ok) throw new Error(res.message);
  const gateway = res.data.components.find((c) => c.name === "gateway");
  if (!gateway?.listen) throw new Error(`the gateway is ${gateway ? gateway.state : "missing"} and listens nowhere`);
  const port = gateway.listen.slice(gateway.listen.lastIndexOf(":") + 1);
  const host = location.hostname.includes(":") && !location.hostname.startsWith("[") ? `[${location.hostname}]` : location.hostname;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = gatewayToken ? `?token=${encodeURIComponent(gatewayToken)}` : "";
  return { url: `${scheme}://${host}:${port}/ws/${encodeURIComponent(user)}${query}`, shown: `${scheme}://${host}:${port}/ws/${user}` };
}

export function Chat() {
  const saved = useRef(load());
  const [user, setUser] = useState(saved.current.user || `panel-${randomId().slice(0, 6)}`);
  const [gatewayToken, setGatewayToken] = useState(saved.current.gatewayToken || "");
  const [items, setItems] = useState(saved.current.items || []);
  const [lastSeq, setLastSeq] = useState(saved.current.lastSeq || 0);
  const [text, setText] = useState("");
  const [conn, setConn] = useState({ state: "idle", note: "" });
  const [wanted, setWanted] = useState(saved.current.connected ?? true);
  const socket = useRef(null);
  const lastSeqRef = useRef(lastSeq);
  const list = useRef(null);

  useEffect(() => { save({ user, gatewayToken, items: items.slice(-200), lastSeq, connected: wanted }); });
  useEffect(() => { if (list.current) list.current.scrollTop = list.current.scrollHeight; }, [items]);

  const note = (line) => setItems((old) => old.concat({ kind: "note", text: line, at: Date.now() }));

  function onFrame(frame) {
    if (frame.type === "ack") {
      setItems((old) => old.map((i) => i.kind === "user" && i.id === frame.id ? { ...i, seq: frame.seq } : i));
    } else if (frame.type === "chat_token") {
      setItems((old) => {
        const at = old.findIndex((i) => i.kind === "ai" && i.replyTo === frame.reply_to && !i.seq);
        if (at < 0) return old.concat({ kind: "ai", replyTo: frame.reply_to, text: frame.content, streaming: true });
        const next = old.slice();
        next[at] = { ...old[at], text: old[at].text + frame.content };
        return next;
      });
    } else if (frame.type === "chat") {
      if (frame.seq <= lastSeqRef.current) return;  // already shown (resume and delivery may overlap)
      lastSeqRef.current = frame.seq;
      setLastSeq(frame.seq);
      setItems((old) => {
        const at = old.findIndex((i) => i.kind === "ai" && i.replyTo === frame.reply_to && !i.seq);
        const reply = { kind: "ai", replyTo: frame.reply_to, text: frame.content ?? frame.text, seq: frame.seq, streaming: false };
        if (at < 0) return old.concat(reply);
        const next = old.slice();
        next[at] = reply;
        return next;
      });
    } else if (frame.type === "error") {
      note(`error ${frame.name}: ${frame.description}`);
    } else if (frame.type === "notification") {
      note(`notification: ${frame.content}`);
    }
  }

  useEffect(() => {
    if (!wanted) return;
    let stopped = false;
    let retry = 0;
    let attempts = 0;
    const open = async () => {
      setConn({ state: "connecting", note: "" });
      let target;
      try { target = await gatewayUrl(user, gatewayToken); } catch (error) {
        if (stopped) return;
        setConn({ state: "closed", note: `cannot find the gateway: ${error.message}` });
        retry = setTimeout(open, 3000);
        return;
      }
      if (stopped) return;
      const ws = new WebSocket(target.url);
      socket.current = ws;
      ws.onopen = () => {
        attempts = 0;
        setConn({ state: "open", note: target.shown });
        ws.send(JSON.stringify({ type: "resume", after: lastSeqRef.current }));
      };
      ws.onmessage = (m) => { try { onFrame(JSON.parse(m.data)); } catch { /* not JSON: ignored */ } };
      ws.onclose = (close) => {
        if (socket.current === ws) socket.current = null;
        if (stopped) return;
        if (close.code === 4000) { setConn({ state: "closed", note: "replaced by a newer connection of the same user (another tab?)" }); return; }
        if (close.code === 1008) { setConn({ state: "closed", note: `refused: ${close.reason || "bad token"}` }); return; }
        const delay = Math.min(10000, 1000 * 2 ** Math.min(attempts++, 4));
        setConn({ state: "closed", note: `connection closed (${close.code}${close.reason ? `: ${close.reason}` : ""}); reconnecting in ${delay / 1000}s` });
        retry = setTimeout(open, delay);
      };
    };
    open();
    return () => { stopped = true; clearTimeout(retry); socket.current?.close(1000, "panel"); socket.current = null; };
  }, [wanted, user, gatewayToken]);

  function send(event) {
    event.preventDefault();
    const message = text.trim();
    if (!message || socket.current?.readyState !== WebSocket.OPEN) return;
    const id = randomId();
    socket.current.send(JSON.stringify({ text: message, id }));
    setItems((old) => old.concat({ kind: "user", id, text: message }));
    setText("");
  }

  function reset() {
    setItems([]);
    lastSeqRef.current = 0;
    setLastSeq(0);
  }

  return html`
    <form class="toolbar" onSubmit=${(e) => { e.preventDefault(); }}>
      <label>User id <input value=${user} pattern="[A-Za-z0-9_.:\\-]{1,128}" onChange=${(e) => { reset(); setUser(e.currentTarget.value); }} /></label>
      <label>Gateway token <input type="password" value=${gatewayToken} placeholder="if the gateway needs one" autocomplete="off"
        onChange=${(e) => setGatewayToken(e.currentTarget.value)} /></label>
      <button type="button" onClick=${() => setWanted(!wanted)}>${wanted ? "Disconnect" : "Connect"}</button>
      <button type="button" class="quiet" onClick=${reset}>Clear</button>
    </form>
    <p class=${`connection ${conn.state === "open" ? "ok" : "warn"}`} role="status" data-testid="chat-connection">
      ${conn.state === "open" ? `Connected to ${conn.note}` : conn.state === "connecting" ? "Connecting…" : wanted ? conn.note : "Disconnected."}
      ${lastSeq ? html` <span class="muted">· last reply seq ${lastSeq}</span>` : ""}</p>
    <ol class="chat" ref=${list} aria-label="Conversation" aria-live="polite">
      ${items.map((i, n) => i.kind === "note" ? html`<li key=${n} class="note">${i.text}</li>` : html`
        <li key=${n} class=${`bubble ${i.kind}${i.streaming ? " streaming" : ""}`}>
          <div class="body">${i.text}</div>
          <div class="meta">${i.kind === "user" ? (i.seq ? `ack · seq ${i.seq}` : "sent · waiting for ack")
            : i.streaming ? `streaming · reply to ${i.replyTo}` : `seq ${i.seq} · reply to ${i.replyTo}`}</div>
        </li>`)}
    </ol>
    <form class="composer" onSubmit=${send}>
      <label for="chat-text" class="sr-only">Message</label>
      <textarea id="chat-text" rows="2" value=${text} placeholder="Write a message; Enter sends, Shift+Enter makes a new line"
        onInput=${(e) => setText(e.currentTarget.value)}
        onKeyDown=${(e) => { if (e.key === "Enter" && !e.shiftKey) send(e); }}></textarea>
      <button type="submit" class="primary" disabled=${conn.state !== "open"}>Send</button>
      <button type="button" disabled=${conn.state !== "open"} onClick=${() => socket.current?.send(JSON.stringify({ type: "cancel" }))}>Stop reply</button>
    </form>`;
}
