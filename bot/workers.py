"""`steward serve --workers N`: N processes answering on one port.

Each worker is a fork of `steward serve` that builds its own app (its own database pool, Redis client, push
sender and scheduler) and binds the port with SO_REUSEPORT, so the kernel spreads connections over them; the
parent only starts, watches and stops them. Workers share nothing in memory, so conversation state, the
per-resident lock and message dedup must live in Redis (`serve` refuses several workers without it); the
scheduler runs in each, and a Redis lock lets one of them lead. The first worker starts alone (it may create or
upgrade an SQLite schema); the others follow once it listens. Stopping the parent (Ctrl+C, SIGTERM) stops every
worker gracefully; a worker that dies stops the others and the parent exits with its code, for the service
manager to restart the whole set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("steward.workers")

START_TIMEOUT = 120.0  # seconds the first worker may take to listen (a schema upgrade on first start)


def serve_workers(run: Callable[[], None], workers: int, host: str, port: int) -> int:
    """Fork `workers` processes that each call `run()` (which serves until stopped); returns the exit code."""
    children = [_fork(run)]
    try:
        _wait_listening(host, port, children[0])
        children += [_fork(run) for _ in range(workers - 1)]
    except BaseException:
        _signal_all(children, signal.SIGTERM)
        raise
    log.info("%d workers serving on %s:%s (pids %s)", workers, host, port, " ".join(map(str, children)))
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(children, signal.SIGINT)  # each worker's aiohttp shuts down gracefully on SIGINT

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        children.remove(pid)
        if not stopping:
            code = os.waitstatus_to_exitcode(status) or 1
            log.error("worker %d exited with %d: stopping the others", pid, code)
            stop(signal.SIGTERM, None)
    return code


def _fork(run: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The worker: default signal handling (aiohttp installs its own), and never back into the parent's stack.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        run()
    except KeyboardInterrupt:
        code = 0  # Ctrl-C reaches every worker of the group: a clean stop, not a failure
    except BaseException:
        log.exception("worker failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)
    return 0  # not reached


def _wait_listening(host: str, port: int, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise SystemExit(os.waitstatus_to_exitcode(status) or 1)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the first worker did not listen on {host}:{port} within {START_TIMEOUT:.0f} s")


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
