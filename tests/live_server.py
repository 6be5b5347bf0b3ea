"""A real uvicorn server for an app, on a free local port, in a thread: for tests that need real sockets."""

from __future__ import annotations

import socket
import threading
import time


def start_server(app, **config) -> tuple[str, object, threading.Thread]:
    """Serve ``app`` (uvicorn ``config`` options added) and return once it accepts connections:
    (base URL, the uvicorn Server, its thread). Stop it with ``server.should_exit = True`` and a join."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start within 10 s"
    return f"http://127.0.0.1:{port}", server, thread
