"""Running the proxy: prepare storage, build the app, serve it with waitress, stop cleanly.

waitress is sized for long-lived streams: every open SSE stream holds one worker thread
for its whole life, so ``PROXY_THREADS`` (default 256, started as needed) replaces
waitress's 4, and ``channel_request_lookahead`` lets waitress notice a client that hangs
up mid-stream.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server
from waitress.trigger import trigger as Trigger

from agent_cli_proxy import __version__
from agent_cli_proxy.affinity import pin_process
from agent_cli_proxy.clock import SYSTEM_CLOCK
from agent_cli_proxy.config import ConfigError, Settings, ensure_directories, load_settings
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.malloc_arenas import limit_arenas
from agent_cli_proxy.sdnotify import notify
from agent_cli_proxy.server_channel import LOOP_TIMEOUT_S, ProxyChannel, serve_in_a_row
from agent_cli_proxy.server_threads import GrowingDispatcher
from agent_cli_proxy.storage.database import Database, open_database
from agent_cli_proxy.storage.instance_lock import InstanceLock, acquire_instance_lock
from agent_cli_proxy.storage.requests import recover_stale_pending
from agent_cli_proxy.web.app import ProxyApp
from agent_cli_proxy.wsgi import create_app

_log = get_logger("server")
STOP_TIMEOUT_S = 5.0


def make_server(app: ProxyApp, settings: Settings, *, host: str | None = None,
                port: int | None = None, sockets: list[socket.socket] | None = None) -> Any:
    """A waitress server bound (not yet running) for *app*; port 0 picks a free port.
    *sockets*: listen on these, already bound (several workers share them), instead."""
    where: dict[str, Any] = {"sockets": sockets} if sockets else {
        "host": settings.proxy_host if host is None else host,
        "port": settings.proxy_port if port is None else port}
    server = create_server(
        app,
        **where,
        # PROXY_THREADS at most, started as requests need them (server_threads).
        _dispatcher=GrowingDispatcher(settings.proxy_threads),
        threads=settings.proxy_threads,
        # Connections beyond the thread count wait in waitress's queue instead of being
        # refused; keep room for every stream plus idle keep-alive connections.
        connection_limit=max(100, settings.proxy_threads * 4),
        channel_request_lookahead=5,
        # poll(), not select(): select() cannot watch descriptors above 1024, and a few
        # hundred open streams (two sockets each) get there; waitress then dies.
        asyncore_use_poll=True,
        # waitress refuses a body of this size or more: from its Content-Length before
        # reading it, or once a chunked upload grows that far (chunk framing counts).
        max_request_body_size=settings.max_request_body_bytes + 1,
        ident=f"agent-cli-proxy/{__version__}",
        expose_tracebacks=False,
        # Keep X-Forwarded-* in the environ: they are forwarded like any header, and read
        # for the client address when TRUST_PROXY_HEADERS says the proxy sits behind one.
        clear_untrusted_proxy_headers=False,
    )
    # Every listening socket (a host name can resolve to several) makes its connections
    # with this class: its own errors then read as JSON too, its main loop does not spin
    # while a worker writes, streams keep their connection, and a connection's next
    # request is served by the thread that served the last (server_channel).
    for listener in _listeners(_sockets(server)):
        listener.channel_class = ProxyChannel
        serve_in_a_row(listener)
    # The main loop's longest sleep: a thread that reads a connection's next request
    # itself leaves the loop unaware of that socket until its next turn (server_channel);
    # a client hanging up is still noticed within this. Set on the adjustments made:
    # waitress's option takes whole seconds only.
    adjustments: Any = server.adj  # typed int there; poll() takes fractions of a second
    adjustments.asyncore_loop_timeout = LOOP_TIMEOUT_S
    return server


def _sockets(server: Any) -> dict[int, Any]:
    """waitress's socket map (a single server keeps it in ``_map``, a multi-socket one in
    ``map``)."""
    sockets = getattr(server, "_map", None)
    return server.map if sockets is None else sockets  # type: ignore[no-any-return]


def _listeners(sockets: dict[int, Any]) -> list[BaseWSGIServer]:
    return [d for d in list(sockets.values()) if isinstance(d, BaseWSGIServer)]


def _in_loop(server: Any, action: Callable[[dict[int, Any]], None]) -> None:
    """Run *action* on the socket map inside waitress's loop thread.

    Safe from another thread or a signal handler: touching sockets from outside the loop
    races its ``select``, so waitress's trigger runs the action inside the loop instead.
    """
    sockets = _sockets(server)
    trigger = next((d for d in list(sockets.values()) if isinstance(d, Trigger)), None)
    if trigger is None:
        return

    def run(_: object = None) -> None:  # runs in the loop thread
        action(sockets)

    # OSError: its pipe is already closed, so the loop is closing the sockets itself.
    with contextlib.suppress(OSError):
        trigger.pull_trigger(run)


def request_stop(server: Any) -> None:
    """Make a running waitress loop close every socket and return."""
    _in_loop(server, wasyncore.close_all)


def serve(settings: Settings) -> int:
    """Run in the foreground until SIGTERM/SIGINT; returns the process exit code."""
    # Before any thread exists (and before workers fork): see malloc_arenas.
    limit_arenas()
    if settings.proxy_workers > 1:
        from agent_cli_proxy.server_workers import serve_workers

        return serve_workers(settings)
    # First: every thread started from here on (checkpointer, loops, waitress's workers)
    # inherits the CPU.
    cpu = pin_process(settings.proxy_cpu_affinity)
    lock = prepare_storage(settings)
    db = Database.open(settings.db_path, migrate=False)  # prepare_storage migrated it
    # WAL checkpoints (page copies and fsyncs) off the request path.
    db.start_checkpointer()
    app = create_app(settings, db, reload_settings=lambda: _reread(settings))
    server = make_server(app, settings)
    start_app(app, settings)
    port = int(server.effective_port)  # waitress reports it as text

    def announce() -> None:
        _log.info("server.listening", host=settings.proxy_host, port=port,
                  url=f"http://{settings.proxy_host}:{port}",
                  upstream=display_url(settings.cli_proxy_api_url),
                  threads=settings.proxy_threads, cpu=cpu,
                  db_path=settings.db_path, version=__version__)
        notify(f"READY=1\nSTATUS=serving on {settings.proxy_host}:{port}")

    try:
        return run_until_stopped(server, app, db, on_ready=announce)
    finally:
        if lock is not None:
            lock.release()


def prepare_storage(settings: Settings) -> InstanceLock | None:
    """Create the directories, migrate the database, take the instance lock (None when
    another proxy holds it) and close the rows a dead process left pending."""
    ensure_directories(settings)
    db = open_database(settings.db_path)
    try:
        lock = acquire_instance_lock(settings.db_path)
        if lock is None:
            _log.warning("storage.shared_database", db_path=settings.db_path,
                         note="another proxy serves this database; only pending rows older "
                              "than STALE_PENDING_MAX_AGE_MS are recovered")
        # Alone on the database, every pending row was left by a process that died.
        max_age_ms = 0 if lock is not None else settings.stale_pending_max_age_ms
        recover_stale_pending(db, max_age_ms, int(SYSTEM_CLOCK.time() * 1000) + 1)
    finally:
        db.close()
    return lock


def start_app(app: ProxyApp, settings: Settings, *, quiet: bool = False) -> None:
    """Freeze start-up's objects, start the background loops, log the configuration's
    warnings (unless *quiet*: another worker logs them)."""
    # What start-up made (modules, settings, the price table: tens of thousands of objects)
    # lives as long as the process: out of the cyclic collector's sight, its full
    # collections no longer walk all of it (about 10 ms each, a pause for every call in
    # flight).
    gc.collect()
    gc.freeze()
    app.start_background()
    if quiet:
        return
    providers = app.services.providers.current
    for warning in (*settings.warnings, *providers.warnings):
        _log.warning("config.warning", message=warning)
    if providers.providers:
        _log.info("providers.loaded", source=providers.source, path=providers.path,
                  providers=[p.id for p in providers.providers])


def _reread(settings: Settings) -> Settings:
    """The configuration as it is now, from the env file the server started with (or the
    one the default search finds, if it found none then)."""
    return load_settings(env_file=settings.env_file)


def reload_providers(app: ProxyApp, reason: str) -> None:
    """Swap in the custom providers as configured now; on any problem keep the ones in
    force (the registry logs every problem). For SIGHUP: runs in its own thread."""
    _log.info("providers.reload_requested", reason=reason)
    try:
        app.services.providers.reload()
    except ConfigError:
        pass  # logged by the registry, with every issue
    except Exception:
        _log.exception("providers.reload_failed")


def _stop_accepting(server: Any) -> None:
    """Close the listening sockets (in the loop thread); open connections keep going."""

    def close_listeners(sockets: dict[int, Any]) -> None:
        for listener in _listeners(sockets):
            wasyncore.dispatcher.close(listener)

    _in_loop(server, close_listeners)


def _busy(server: Any) -> bool:
    dispatcher = server.task_dispatcher
    return bool(dispatcher.active_count or dispatcher.queue)


def run_until_stopped(server: Any, app: ProxyApp, db: Database,
                      on_ready: Callable[[], None] | None = None,
                      on_stop: Callable[[], None] | None = None) -> int:
    """Serve until a stop signal, then drain and unwind.

    On the signal: stop accepting connections, let open requests and streams finish for
    up to SHUTDOWN_DRAIN_MS, then cut what is left (rows aborted, reason ``shutdown``),
    stop the loops, checkpoint and close the database. The signal handler raises
    nothing: an exception raised inside waitress's loop can land in a socket callback,
    whose catch-all would swallow it and keep serving; it starts a drain thread instead,
    which ends the loop through waitress's trigger.
    """
    received: list[int] = []
    drain_s = app.services.settings.shutdown_drain_ms / 1000
    drained = threading.Event()

    def drain_then_stop() -> None:
        started = time.monotonic()
        while _busy(server) and time.monotonic() - started < drain_s:
            drained.wait(0.05)  # polled: waitress offers nothing to wait on
        cut = app.services.watcher.abort_all("shutdown")
        _log.info("shutdown.drain", still_open=cut,
                  waited_ms=round((time.monotonic() - started) * 1000))
        request_stop(server)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            return
        received.append(signum)
        if on_stop is not None:
            on_stop()  # other workers start draining too
        notify("STOPPING=1")
        _log.info("shutdown.signal", signal=signal.Signals(signum).name, drain_ms=round(
            drain_s * 1000))
        _stop_accepting(server)
        threading.Thread(target=drain_then_stop, name="shutdown-drain", daemon=True).start()

    def on_hangup(signum: int, _frame: FrameType | None) -> None:
        # Reading files and taking locks do not belong in a signal handler (it runs
        # between two bytecodes of whatever the main thread was doing): a thread does it.
        threading.Thread(target=reload_providers, args=(app, signal.Signals(signum).name),
                         name="providers-reload", daemon=True).start()

    previous: dict[int, Any] = {}
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if threading.current_thread() is threading.main_thread():
        if not app.services.settings.disable_shutdown_handlers:
            # Python's default SIGTERM kills the process without unwinding (no row
            # finalization, no WAL checkpoint): turn it into an orderly stop.
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        if hangup is not None:
            # The default SIGHUP ends the process; here it reloads the custom providers
            # (systemctl reload), as daemons conventionally do. Not a shutdown handler:
            # DISABLE_SHUTDOWN_HANDLERS leaves it installed.
            previous[hangup] = signal.signal(hangup, on_hangup)
    # Only now: whoever acts on "ready" may send the stop signal straight away.
    if on_ready is not None:
        on_ready()
    try:
        server.run()
    finally:
        drained.set()
        for number, handler in previous.items():
            # A second SIGTERM/SIGINT now ends the process at once; a late SIGHUP (a reload
            # during the unwind) is ignored rather than killing it before the DB is closed.
            signal.signal(number, signal.SIG_IGN if number == hangup else handler)
        wasyncore.close_all(_sockets(server))  # no-op after request_stop
        aborted = app.services.watcher.abort_all("shutdown")  # calls begun meanwhile
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT_S)
        app.close()
        db.close()
        _log.info("shutdown.complete", aborted_late=aborted)
    return 0
