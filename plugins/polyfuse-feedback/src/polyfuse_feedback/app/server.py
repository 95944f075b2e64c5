"""Running the app: in the foreground (``polyfuse feedback serve``) or in a thread of a training run."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from polyfuse.errors import PolyfuseError

STARTUP_TIMEOUT_S = 30.0
# Requests run on a pool of threads, and a thread holding the store's write lock hands the GIL back and
# forth with the others at each database call: at Python's default 5 ms switch interval, each write
# waited tens of milliseconds behind threads that had nothing to write.
SWITCH_INTERVAL_S = 0.0005
KEEP_ALIVE_S = 75  # people look at a query for a while; their browser's connection should still be there


def _server(database_url: str, host: str, port: int, lease_s: float, access_log: bool) -> Any:
    import uvicorn

    from polyfuse_feedback.app import create_app

    config = uvicorn.Config(create_app(database_url, lease_s=lease_s), host=host, port=port,
                            log_level="warning" if not access_log else "info", access_log=access_log,
                            timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S)
    return uvicorn.Server(config)


def _url(server: Any, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


def start_in_thread(database_url: str, host: str, port: int, *, lease_s: float) -> tuple[Any, threading.Thread, str]:
    """Start the app on a daemon thread; ``(server, thread, url)`` once it listens. Stop: ``server.should_exit = True``."""
    server = _server(database_url, host, port, lease_s, access_log=False)
    thread = threading.Thread(target=server.run, name="feedback-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise PolyfuseError(f"the annotation app could not listen on {host}:{port} (is the port in use? set "
                                "the human source's port, or 0 for any free port)")
        time.sleep(0.05)
    return server, thread, _url(server, host)


DATABASE_VARIABLE, LEASE_VARIABLE = "POLYFUSE_FEEDBACK_DB", "POLYFUSE_FEEDBACK_LEASE_S"


def app_from_environment() -> Any:
    """The app of each worker process when ``serve`` runs several: its settings come through the environment."""
    from polyfuse_feedback.app import create_app

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return create_app(os.environ[DATABASE_VARIABLE], lease_s=float(os.environ[LEASE_VARIABLE]))


def serve(database_url: str, host: str, port: int, *, lease_s: float, workers: int = 1, on_start: Any = None) -> None:
    """Run the app in the foreground until interrupted; ``on_start(url)`` once it listens.

    Several ``workers`` are processes sharing the port (the state is all in the database): more
    requests at once on a machine with cores to spare.
    """
    if workers > 1:
        import uvicorn

        if port == 0:
            raise PolyfuseError("several workers need a fixed --port")
        from polyfuse_feedback.store import LabelStore

        LabelStore(database_url).close()  # create and migrate it once, before the workers race to
        os.environ.update({DATABASE_VARIABLE: database_url, LEASE_VARIABLE: str(lease_s)})
        if on_start is not None:
            on_start(f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}")
        uvicorn.run("polyfuse_feedback.app.server:app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_level="info", timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S)
        return
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # this process only serves (in a training run, the app does not set it)
    server = _server(database_url, host, port, lease_s, access_log=True)
    if on_start is not None:
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets=sockets)
            if server.started:
                on_start(_url(server, host))

        server.startup = startup
    server.run()
    if not server.started:
        raise PolyfuseError(f"the annotation app could not listen on {host}:{port}: is the port in use?")
