"""Several server processes on one port and one database (PROXY_WORKERS > 1).

One process runs all of the proxy's Python under one interpreter lock, so on a machine
with several CPUs it tops out at one CPU's worth of calls (docs/benchmarks.md). With
PROXY_WORKERS=N the ``serve`` process binds the port, prepares the database, then forks
N-1 more workers before it starts a single thread; each worker builds its own app,
connection pools and SQLite connections, and accepts from the shared listening sockets
(the kernel hands each connection to one of them, whichever is free first).

The ``serve`` process stays the first worker, and the only one that systemd, the admin
API and the background loops know (``web.workers``): it holds the instance lock, talks to
systemd (READY once every worker listens), runs pricing, backfill, attribution and quota
work, answers admin, metrics and readiness requests (the others hand those over), and
passes its stop and reload signals on. It stops the whole service when another worker
dies (systemd restarts it); a worker whose first worker died stops itself (its end of a
pipe closes with the first worker, however that ended).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from agent_cli_proxy import __version__
from agent_cli_proxy.affinity import pin_threads, plan_cpus
from agent_cli_proxy.config import ConfigError, ConfigIssue, Settings
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger, set_worker
from agent_cli_proxy.sdnotify import notify
from agent_cli_proxy.server import (
    STOP_TIMEOUT_S,
    _reread,
    make_server,
    prepare_storage,
    run_until_stopped,
    start_app,
)
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.web.workers import WorkerRole
from agent_cli_proxy.wsgi import create_app

_log = get_logger("server")
BACKLOG = 1024
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0  # after the drain, before a worker that will not stop is killed


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for *host*:*port* (a name may resolve to several addresses), as
    waitress would bind them, to be shared by every worker."""
    found: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            found.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in found:
            sock.close()
        raise
    return found


def serve_workers(settings: Settings) -> int:
    """``serve`` with PROXY_WORKERS processes; returns the exit code."""
    count = settings.proxy_workers
    if not hasattr(os, "fork"):
        raise ConfigError([ConfigIssue("PROXY_WORKERS", "more than 1 needs fork(), which "
                                                        "this system does not have")])
    cpus = plan_cpus(settings.proxy_cpu_affinity, count)  # ConfigError before anything
    lock = prepare_storage(settings)
    public = bind_listeners(settings.proxy_host, settings.proxy_port)
    private = bind_listeners("127.0.0.1", 0)[0]
    share_dir = tempfile.mkdtemp(prefix="agent-cli-proxy-workers-")  # 0700
    secret = secrets.token_urlsafe(24)
    roles = [WorkerRole(index, count, private.getsockname()[1], secret, share_dir)
             for index in range(count)]
    ready_read, ready_write = os.pipe()
    life_read, life_write = os.pipe()
    children: dict[int, int] = {}  # pid -> worker index
    if threading.active_count() != 1:
        # fork() copies only the calling thread; locks other threads held stay held.
        _log.warning("server.fork_with_threads", threads=threading.active_count())
    # A reload signal before a worker has its handler would end it (the default action):
    # ignored until run_until_stopped installs the handler, in every worker.
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None:
        signal.signal(hangup, signal.SIG_IGN)
    for role in roles[1:]:
        pid = os.fork()
        if pid == 0:  # the new worker: never returns into the caller's code
            code = 1
            try:
                os.close(ready_read)
                os.close(life_write)
                private.close()
                if lock is not None:
                    # The first worker's lock alone: a restart after it died must find
                    # the database free while this worker drains.
                    lock.release()
                code = _run_helper(settings, role, public, cpus[role.index], ready_write,
                                   life_read)
            except BaseException:
                _log.exception("server.worker_failed", worker=role.index)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)  # not the caller's unwinding: it belongs to the first worker
        children[pid] = role.index
    os.close(ready_write)
    os.close(life_read)
    try:
        return _run_primary(settings, roles[0], [*public, private], cpus[0], children,
                            ready_read)
    finally:
        for sock in [*public, private]:
            sock.close()
        os.close(life_write)  # any worker still there stops now
        shutil.rmtree(share_dir, ignore_errors=True)
        if lock is not None:
            lock.release()


def _run_primary(settings: Settings, role: WorkerRole, sockets: list[socket.socket],
                 cpu: int | None, children: dict[int, int], ready_read: int) -> int:
    pin_threads(cpu)
    set_worker(role.index)
    db = Database.open(settings.db_path, migrate=False)
    db.start_checkpointer()  # for every worker: checkpoints are the database's
    app = create_app(settings, db, reload_settings=lambda: _reread(settings), worker=role)
    server = make_server(app, settings, sockets=sockets)
    stopping = threading.Event()
    stop_at: list[float] = []
    failed: list[int] = []
    ready = threading.Event()
    reload_waiting = threading.Event()

    def signal_workers(signum: int) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pass_reload_on() -> None:
        # A reload (SIGHUP, the admin route, the CLI) reaches every worker's providers;
        # before they all listen, once they do.
        if ready.is_set():
            signal_workers(signal.SIGHUP)
        else:
            reload_waiting.set()

    app.services.providers.after_reload.append(pass_reload_on)

    def watch(pid: int, index: int) -> None:
        _pid, status = os.waitpid(pid, 0)
        children.pop(pid, None)
        if not stopping.is_set():
            _log.error("server.worker_died", worker=index, pid=pid,
                       status=os.waitstatus_to_exitcode(status))
            failed.append(index)
            os.kill(os.getpid(), signal.SIGTERM)  # stop the service: systemd restarts it

    watchers = [threading.Thread(target=watch, args=(pid, index), daemon=True,
                                 name=f"worker-{index}-watch")
                for pid, index in children.items()]
    for watcher in watchers:
        watcher.start()
    start_app(app, settings)
    port = sockets[0].getsockname()[1]

    def announce() -> None:
        waited = _await_ready(ready_read, len(children), stopping)
        ready.set()
        if reload_waiting.is_set():
            signal_workers(signal.SIGHUP)
        _log.info("server.listening", host=settings.proxy_host, port=port,
                  url=f"http://{settings.proxy_host}:{port}",
                  upstream=display_url(settings.cli_proxy_api_url),
                  threads=settings.proxy_threads, workers=role.count,
                  workers_ready=waited + 1, cpu=cpu, db_path=settings.db_path,
                  version=__version__)
        notify(f"READY=1\nSTATUS=serving on {settings.proxy_host}:{port} "
               f"with {role.count} workers")

    def on_stop() -> None:
        stop_at.append(time.monotonic())
        stopping.set()
        signal_workers(signal.SIGTERM)

    code = run_until_stopped(server, app, db, on_ready=announce, on_stop=on_stop)
    if not stop_at:
        on_stop()  # stopped without a signal of its own: the others stop now
    # The others drain as long as this one may (they got the signal at the same time),
    # then unwind: only past that are they killed.
    started = stop_at[0] if stop_at else time.monotonic()
    deadline = (started + settings.shutdown_drain_ms / 1000 + STOP_TIMEOUT_S
                + STOP_GRACE_S)
    for watcher in watchers:
        watcher.join(max(0.0, deadline - time.monotonic()))
    if children:
        _log.error("server.workers_killed", workers=sorted(children.values()))
        failed.extend(children.values())
        signal_workers(signal.SIGKILL)
    os.close(ready_read)
    return 1 if failed else code


def _await_ready(ready_read: int, expected: int, stopping: threading.Event) -> int:
    """Wait until *expected* workers have said they listen (at most READY_TIMEOUT_S, and
    not past a stop signal); how many did."""
    got = 0
    deadline = time.monotonic() + READY_TIMEOUT_S
    poller = select.poll()
    poller.register(ready_read, select.POLLIN)
    while got < expected and not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # In slices: a stop signal's handler runs between them.
        if not poller.poll(min(left, 0.1) * 1000):
            continue
        data = os.read(ready_read, expected - got)
        if not data:
            break  # every worker's end closed: some died before listening
        got += len(data)
    if got < expected:
        _log.warning("server.workers_not_ready", ready=got, expected=expected)
    return got


def _run_helper(settings: Settings, role: WorkerRole, sockets: list[socket.socket],
                cpu: int | None, ready_write: int, life_read: int) -> int:
    pin_threads(cpu)
    set_worker(role.index)
    # Only the first worker talks to systemd (NotifyAccess=main).
    os.environ.pop("NOTIFY_SOCKET", None)
    db = Database.open(settings.db_path, migrate=False)
    db.defer_checkpoints()
    app = create_app(settings, db, reload_settings=lambda: _reread(settings), worker=role)
    server = make_server(app, settings, sockets=sockets)

    def lifeline() -> None:
        while os.read(life_read, 1):
            pass
        # The first worker is gone (stopped, crashed or killed): stop too, and remove
        # what it would have (it may not have lived to).
        os.kill(os.getpid(), signal.SIGTERM)
        shutil.rmtree(role.share_dir, ignore_errors=True)

    threading.Thread(target=lifeline, daemon=True, name="lifeline").start()
    start_app(app, settings, quiet=True)

    def ready() -> None:
        os.write(ready_write, b"r")
        os.close(ready_write)

    return run_until_stopped(server, app, db, on_ready=ready)
