"""In-process registry of SSE connections and `poll://` routing (docs/protocol.md#28-sse-get-pollgroupid).

A connection is registered before its first byte is written; a message is handed to exactly one
connection's bounded queue. The delivery layer learns whether the event was really written
through the `on_written` callback that travels with it (delivery is at least once: docs/protocol.md#7-messages).

With inbound auth on, every connection carries its principal (`shared.auth.principal_of`): a
worker id (`poll://uni@group/id`) is held by one principal at a time (another principal's connect
is refused, 409, so nobody can take over someone else's unicast messages), a principal may hold at
most `max_per_principal` connections here (429), and an `admit` hook (the cluster registry) may
refuse a connection before anything can be delivered to it.
"""
from __future__ import annotations

import itertools
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.protocol import Address

OnWritten = Callable[[bool], None]  # called with True once written, False if the event was dropped


class Refused(Exception):
    """A connection the hub will not register: the poll route answers `status` with `message`
    (plain text) and nothing was registered."""

    status = 503
    message = "Poll registration at capacity"


class AtCapacity(Refused):
    """Every slot of this process (`transports.http_poll.max_connections`) is taken."""


class Held(Refused):
    """The worker id has a live connection of another principal (here or on another instance)."""

    status = 409
    message = "Worker id held by another principal"


class PrincipalAtCapacity(Refused):
    """The principal already holds `transports.http_poll.max_connections_per_token` connections here."""

    status = 429
    message = "Too many poll connections for this token"


class RegistryUnavailable(Refused):
    """Whether another principal holds the id could not be checked (database down): fail closed."""

    message = "Poll registration unavailable"


@dataclass(eq=False)
class Connection:
    group: str
    id: str
    seq: int
    queue: queue.Queue[tuple[bytes, OnWritten | None] | None]
    principal: str | None = None  # who holds it (auth on); None with auth off
    closed: bool = False
    backlog: bool = False  # a message was refused because the buffer was full
    admitted: bool = True  # False while the `admit` hook runs: nothing is delivered to it yet
    # the REST API's listener (shared/legacy/sse.py): each message's bytes in that API's shape
    render: Callable[[bytes], bytes | None] | None = None


class PollHub:
    def __init__(self, max_connections: int = 1000, buffer_size: int = 100, max_per_principal: int = 0) -> None:
        """`max_per_principal` 0: no per-principal cap (only connections with a principal count)."""
        self.max_connections = max_connections
        self.buffer_size = buffer_size
        self.max_per_principal = max_per_principal
        self._groups: dict[str, list[Connection]] = {}
        self._count = 0
        self._per_principal: dict[str, int] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.on_connect: list[Callable[[Connection], None]] = []
        self.on_drained: list[Callable[[Connection], None]] = []  # a backlogged buffer emptied
        self.on_disconnect: list[Callable[[Connection], None]] = []
        # runs after the local checks, before the connection can receive anything; raises Refused
        # to turn it away (on a shared database: `ReceiverRegistry.admit`, which sees every instance)
        self.admit: Callable[[Connection], None] | None = None

    @property
    def count(self) -> int:
        return self._count

    def register(self, group: str, id: str, principal: str | None = None,
                 render: Callable[[bytes], bytes | None] | None = None) -> Connection:
        """A new connection, or Refused. With a principal (auth on): a live connection of another
        principal with the same (group, id) refuses it (Held); the same principal's reconnect
        is accepted (the newest connection gets unicast messages). `render`: rewrites each
        message for this connection."""
        with self._lock:
            if self._count >= self.max_connections:
                raise AtCapacity()
            if principal is not None:
                if any(c.id == id and c.principal != principal for c in self._groups.get(group, ())):
                    raise Held()  # closed connections leave the list, so every one here is live
                if self.max_per_principal and self._per_principal.get(principal, 0) >= self.max_per_principal:
                    raise PrincipalAtCapacity()
            conn = Connection(group, id, next(self._seq), queue.Queue(self.buffer_size), principal,
                              admitted=self.admit is None, render=render)
            self._groups.setdefault(group, []).append(conn)
            self._count += 1
            if principal is not None:
                self._per_principal[principal] = self._per_principal.get(principal, 0) + 1
        if self.admit is not None:
            try:
                self.admit(conn)
            except BaseException:
                self.unregister(conn, notify=False)  # it never connected: nobody hears of it
                raise
            conn.admitted = True
        for cb in self.on_connect:
            cb(conn)
        return conn

    def unregister(self, conn: Connection, notify: bool = True) -> None:
        with self._lock:
            if conn.closed:
                return
            conn.closed = True
            conns = self._groups.get(conn.group, [])
            if conn in conns:
                conns.remove(conn)
                self._count -= 1
                p = conn.principal
                if p is not None:
                    left = self._per_principal.get(p, 1) - 1
                    if left > 0:
                        self._per_principal[p] = left
                    else:
                        self._per_principal.pop(p, None)
            if not conns:
                self._groups.pop(conn.group, None)
        for cb in self.on_disconnect if notify else ():
            cb(conn)
        while True:  # events never written go back to the delivery layer for another try
            try:
                item = conn.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1] is not None:
                item[1](False)

    def pick(self, addr: Address) -> Connection | None:
        """Unicast: newest connection with the id. Anycast: preferred id, else a random member."""
        conns = self._groups.get(addr.group)
        if not conns:
            return None
        if addr.id:
            for conn in reversed(conns):
                if conn.id == addr.id and not conn.closed and conn.admitted:
                    return conn
            if addr.cast == "uni":
                return None
        live = [c for c in conns if not c.closed and c.admitted]
        return random.choice(live) if live else None

    def groups(self) -> list[str]:
        with self._lock:
            return list(self._groups)

    def receivers(self) -> set[tuple[str, str]]:
        """(group, id) of every open connection."""
        with self._lock:
            return {(c.group, c.id) for cs in self._groups.values() for c in cs}

    def holders(self) -> dict[tuple[str, str], str | None]:
        """(group, id) of every admitted open connection -> its principal (one per id: see register)."""
        with self._lock:
            return {(c.group, c.id): c.principal for cs in self._groups.values() for c in cs if c.admitted}

    def disconnect_id(self, group: str, id: str, principal: str | object | None = ...) -> int:
        """End every connection of one worker id (another principal holds it now; or, given a
        principal, only that principal's: a newer stream replaces them); how many."""
        with self._lock:
            conns = [c for c in self._groups.get(group, ()) if c.id == id
                     and (principal is ... or c.principal == principal)]
        for c in conns:
            self.disconnect(c)
        return len(conns)

    def has_id(self, group: str, id: str) -> bool:
        return any(c.id == id and not c.closed for c in self._groups.get(group, ()))

    def has_group(self, group: str) -> bool:
        return bool(self._groups.get(group))

    def has_receiver(self, addr: Address) -> bool:
        return self.pick(addr) is not None

    def deliver(self, addr: Address, payload: bytes, on_written: OnWritten | None = None) -> bool:
        """Queue one event on the chosen connection; False when none exists or its buffer is full."""
        conn = self.pick(addr)
        if conn is None:
            return False
        try:
            conn.queue.put_nowait((payload, on_written))
            return True
        except queue.Full:
            conn.backlog = True
            return False

    def watch(self, conn: Connection, sock: object) -> None:
        """Notice a client that hung up while its stream is idle: SSE clients never send after the
        request, so end-of-file on the socket means gone. Without this, messages routed to a dead
        connection would count as written once the kernel buffered them."""

        def run() -> None:
            try:
                while sock.recv(4096):  # type: ignore[attr-defined]
                    pass
            except OSError:
                pass
            self.disconnect(conn)

        threading.Thread(target=run, name=f"sse-watch-{conn.seq}", daemon=True).start()

    def disconnect(self, conn: Connection) -> None:
        self.unregister(conn)
        try:
            conn.queue.put_nowait(None)  # wake the stream so it ends now
        except queue.Full:
            pass

    def close_all(self) -> None:
        with self._lock:
            conns = [c for cs in self._groups.values() for c in cs]
        for c in conns:
            self.disconnect(c)  # unregister first: it empties the queue, which would swallow the wake-up

    def stream(self, conn: Connection, keepalive_s: float) -> Iterator[bytes]:
        """The SSE body: one `data:` line per message, LF only, comment keep-alives when idle."""
        pending: OnWritten | None = None
        try:
            yield b": connected\n\n"
            while not conn.closed:
                try:
                    item = conn.queue.get(timeout=keepalive_s)
                except queue.Empty:
                    yield b": keep-alive\n\n"
                    continue
                if item is None:
                    return
                payload, pending = item
                shown = conn.render(payload) if conn.render is not None else payload
                if shown is not None:  # None: the renderer found the message stale, it is done unsent
                    yield b"data: " + shown + b"\n\n"
                done, pending = pending, None
                if done is not None:  # the server wrote the event before resuming us
                    done(True)
                if conn.backlog and conn.queue.empty():  # refused messages can come now
                    conn.backlog = False
                    for cb in self.on_drained:
                        cb(conn)
        finally:
            if pending is not None:  # the write of this event failed: the client is gone
                pending(False)
            self.unregister(conn)
