#!/usr/bin/env python3
"""A minimal reference for the chat round-trip benchmark: the same gateway
protocol as mooring's /ws/<user_id> (ack, chat_token pieces, chat), an echo
reply word by word, built the way the Python hosts do it: FastAPI + uvicorn +
sqlite3. Per message it does what mooring does: the message is stored (one
commit) before it is acknowledged, the user's last 20 earlier messages are
read as the reply's context, and the reply is stored (one commit) before it is
sent.

    python3 bench/peers/fastapi_chat.py PORT DATA_DIR [normal|full]

The third argument (or PEER_SYNCHRONOUS) is SQLite's `synchronous` in WAL
mode: `normal` (a commit survives a crash of the process, not a power cut) or
`full` (fsync on every commit; the default). The settings are printed on
stdout once the database is open, one line starting with `peer settings:`.
"""
import asyncio, json, os, sqlite3, sys, threading, time

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

HISTORY_MESSAGES = 20

# From the command line, or from the environment when uvicorn imports this
# module itself (bench/peers/fastapi_reload.py).
port = int(os.environ.get("PEER_PORT") or sys.argv[1])
data_dir = os.environ.get("PEER_DATA_DIR") or sys.argv[2]
synchronous = (os.environ.get("PEER_SYNCHRONOUS")
               or (sys.argv[3] if __name__ == "__main__" and len(sys.argv) > 3 else "full")).upper()
if synchronous not in ("NORMAL", "FULL"):
    sys.exit(f"synchronous must be normal or full, not {synchronous.lower()}")

os.makedirs(data_dir, exist_ok=True)
db = sqlite3.connect(os.path.join(data_dir, "peer.db"), check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute(f"PRAGMA synchronous={synchronous}")
db.execute("""CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,
              user_id TEXT, role TEXT, content TEXT, client_id TEXT, reply_to INTEGER,
              created_ms INTEGER, UNIQUE(user_id, client_id))""")
db.execute("CREATE INDEX IF NOT EXISTS messages_by_user ON messages(user_id, seq)")
db.commit()
journal = db.execute("PRAGMA journal_mode").fetchone()[0]
sync_level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[db.execute("PRAGMA synchronous").fetchone()[0]]
settings = (f"journal_mode={journal.upper()} synchronous={sync_level} one commit per stored message, "
            f"last {HISTORY_MESSAGES} messages read as context; sqlite {sqlite3.sqlite_version}")
app = FastAPI()
# One connection shared by the worker threads: sqlite3 needs it serialized.
db_lock = threading.Lock()


def store(user_id, role, content, client_id=None, reply_to=None):
    with db_lock:
        cur = db.execute("INSERT INTO messages (user_id, role, content, client_id, reply_to, created_ms) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (user_id, role, content, client_id, reply_to, int(time.time() * 1000)))
        db.commit()
        return cur.lastrowid


def store_and_read_context(user_id, content, client_id):
    """Stores the user message, then reads what came before it: the context a
    reply is generated from."""
    seq = store(user_id, "user", content, client_id)
    with db_lock:
        rows = db.execute("SELECT role, content FROM (SELECT seq, role, content FROM messages "
                          "WHERE user_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                          (user_id, seq, HISTORY_MESSAGES)).fetchall()
    return seq, [{"role": role, "content": text} for role, text in rows]


def echo(history, text):
    """The echo provider: the reply does not depend on the context, but the
    request a real provider would get is built from it."""
    request = {"messages": history + [{"role": "user", "content": text}]}
    assert request["messages"][-1]["content"] == text
    return "echo: " + text


@app.websocket("/ws/{user_id}")
async def chat(ws: WebSocket, user_id: str):
    await ws.accept()
    try:
        while True:
            frame = json.loads(await ws.receive_text())
            text = frame.get("text", "")
            seq, history = await asyncio.to_thread(store_and_read_context, user_id, text, frame.get("id"))
            if frame.get("id") is not None:
                await ws.send_text(json.dumps({"type": "ack", "id": frame.get("id"), "seq": seq}))
            reply = echo(history, text)
            start = 0
            while start < len(reply):
                end = reply.find(" ", start)
                end = len(reply) if end < 0 else end + 1
                await ws.send_text(json.dumps({"type": "chat_token", "content": reply[start:end],
                                               "reply_to": seq}))
                start = end
            reply_seq = await asyncio.to_thread(store, user_id, "assistant", reply, None, seq)
            await ws.send_text(json.dumps({"type": "chat", "content": reply, "text": reply,
                                           "who": "AI", "user_id": user_id, "seq": reply_seq,
                                           "reply_to": seq}))
    except WebSocketDisconnect:
        pass


if __name__ == "__main__":
    print("peer settings:", settings, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
