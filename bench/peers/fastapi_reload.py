#!/usr/bin/env python3
"""The chat reference (fastapi_chat.py) under `uvicorn --reload`, the way the
Python hosts apply a saved configuration: when a .py file in WATCH_DIR changes,
the worker process is stopped and a new one started.

    python3 bench/peers/fastapi_reload.py PORT DATA_DIR WATCH_DIR
"""
import os, sys

import uvicorn

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PEER_PORT"] = sys.argv[1]
    os.environ["PEER_DATA_DIR"] = sys.argv[2]
    sys.path.insert(0, here)
    os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get("PYTHONPATH", "")
    uvicorn.run("fastapi_chat:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                reload=True, reload_dirs=[sys.argv[3]])
