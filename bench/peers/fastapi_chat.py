#!/usr/bin/env python3
"""A minimal reference for the chat round-trip benchmark: the same gateway
protocol as mooring's /ws/<user_id> (ack, chat_token pieces, chat), an echo
reply word by word, messages stored in SQLite (WAL) before they are
acknowledged and replies stored before they are sent — built the way the Python
hosts do it: FastAPI + uvicorn + sqlite3.

    python3 bench/peers/fastapi_chat.py PORT DATA_DIR
"""
import asyncio, json, os, sqlite3, sys, threading, time

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

# From the command line, or from the environment when uvicorn imports this
# module itself (bench/peers/fastapi_reload.py).
port = int(os.environ.get("PEER_PORT") or sys.argv[1])
data_dir = os.environ.get("PEER_DATA_DIR") or sys.argv[2]
os.makedirs(data_dir, exist_ok=True)
db = sqlite3.connect(os.path.join(data_dir, "peer.db"), check_same_thread=False)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("""CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,
              user_id TEXT, role TEXT, content TEXT, client_id TEXT, reply_to INTEGER,
              created_ms INTEGER, UNIQUE(user_id, client_id))""")
db.commit()
app = FastAPI()
# One connection shared by the worker threads: sqlite3 needs it serialized.
db_lock = threading.Lock()


def store(user_id, role, content, client_id=None, reply_to=None):
    with db_lock:
        return _store(user_id, role, content, client_id, reply_to)


def _store(user_id, role, content, client_id, reply_to):
    cur = db.execute("INSERT INTO messages (user_id, role, content, client_id, reply_to, created_ms) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (user_id, role, content, client_id, reply_to, int(time.time() * 1000)))
    db.commit()
    return cur.lastrowid


@app.websocket("/ws/{user_id}")
async def chat(ws: WebSocket, user_id: str):
    await ws.accept()
    try:
        while True:
            frame = json.loads(await ws.receive_text())
            text = frame.get("text", "")
            seq = await asyncio.to_thread(store, user_id, "user", text, frame.get("id"))
            await ws.send_text(json.dumps({"type": "ack", "id": frame.get("id"), "seq": seq}))
            reply = "echo: " + text
            for word in reply.split(" "):
                await ws.send_text(json.dumps({"type": "chat_token", "content": word + " ",
                                               "reply_to": seq}))
            reply_seq = await asyncio.to_thread(store, user_id, "assistant", reply, None, seq)
            await ws.send_text(json.dumps({"type": "chat", "content": reply, "text": reply,
                                           "who": "AI", "user_id": user_id, "seq": reply_seq,
                                           "reply_to": seq}))
    except WebSocketDisconnect:
        pass


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
