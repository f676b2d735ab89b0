"""The Redis Streams broker (docs/architecture.md §Keys, §Delivery).

One stream per (queue, priority level), one consumer group ``fastq`` per stream. Consumers read with
XREADGROUP, and acknowledge with XACK + XDEL in the same MULTI/EXEC that writes the outcomes, so a
stream only ever holds ready and in-flight messages and nothing is acked unwritten.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
import structlog

try:  # redis-py uses hiredis when it is installed (it is a dependency): _raw_execute's fast path
    from hiredis import pack_command as _pack_command
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - redis-py's own layers then
    _pack_command = None
    _NOT_ENOUGH_DATA = None

from fastq import keys
from fastq.broker import lua
from fastq.broker.base import (
    ConsumerStats,
    Delivery,
    Finish,
    GraphStep,
    Release,
    SendItem,
    StreamStats,
)
from fastq.errors import BrokerOutOfMemory, BrokerRefused, BrokerUnavailable

log = structlog.get_logger("fastq.broker")
# What "the broker is unreachable or refuses writes for now" looks like from redis-py.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
              redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)
# Replies that mean "not now" rather than "never": the server is loading, out of memory, a replica.
_UNAVAILABLE_PREFIXES = ("OOM", "EXECABORT", "LOADING", "MASTERDOWN", "READONLY")
_BEAT_VERBS = ("beat_acquire", "beat_renew", "beat_release", "beat_fire", "beat_advance")
_STREAM_INFO: dict[str, tuple[str, int]] = {}
CONNECT_TIMEOUT_S = 5.0  # connecting, handshake included; a result wait may bound it further


class Refused(BrokerRefused, redis.ResponseError):
    """A command redis refused as invalid; still a ``redis.ResponseError`` for code that caught
    that before (inside this package, and callers written against redis-py)."""


def _stream_info(key: str | bytes) -> tuple[str, int]:
    """Cached (stream key as str, level) for a key from a Redis reply."""
    info = _STREAM_INFO.get(key)  # type: ignore[arg-type]
    if info is None:
        text = key.decode() if isinstance(key, bytes) else key
        info = _STREAM_INFO[key] = (text, keys.parse_stream(text)[1])  # type: ignore[index]
    return info


def _send_args(items: list[tuple[str, int, bytes, int]]) -> tuple[list[str], list]:
    """KEYS and item ARGV of send.lua for ``items``."""
    targets: list[str] = []
    args: list = []
    for queue, level, data, due_ms in items:
        if due_ms:
            targets.append(keys.delayed(queue))
            args += (due_ms, _delayed_member(level, data))
        else:
            targets.append(keys.stream(queue, level))
            args += (b"0", data)
    return targets, args


def _deliveries(reply) -> list[Delivery]:
    """Deliveries from an XREADGROUP reply (None when nothing was read)."""
    out: list[Delivery] = []
    for key, entries in reply or ():
        skey, level = _stream_info(key)
        for entry_id, fields in entries:
            out.append((skey, level, entry_id, fields[1] if fields else None))
    return out


def _taken(reply: list) -> list[Delivery]:
    """What a dag_release.lua call read for its sender: ``[1, XREADGROUP reply]``."""
    read = reply[1] if len(reply) > 1 else None
    if read and isinstance(read[0], bytes):  # fakeredis drops the outer list of one stream
        read = [read]
    return _deliveries(read)


def _no_group(exc: Exception) -> bool:
    """A read of a stream or group that does not exist (fakeredis words it its own way)."""
    text = str(exc)
    return "NOGROUP" in text or "requires the key to exist" in text


def _entries_added(info: object) -> int:
    """``entries-added`` of an XINFO STREAM reply (a flat list, or a dict under RESP3); 0 for a
    missing stream (the reply is an error) or a server before Redis 7."""
    if isinstance(info, list):
        info = dict(zip(info[::2], info[1::2], strict=False))
    if isinstance(info, dict):
        value = info.get(b"entries-added", info.get("entries-added"))
        return value if isinstance(value, int) else 0
    return 0


def _pending_count(reply) -> int:
    """The count in an XPENDING summary (redis-py parses it into a dict); an error (no group
    yet) counts as none."""
    return int(reply["pending"] or 0) if isinstance(reply, dict) else 0


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _push_result(cmd, task_id: str, record: bytes, ttl_ms: int, overwrite: bool) -> None:
    """Write a terminal record: pushed, then the list trimmed to its first element, so the first
    outcome written wins (a late second writer adds nothing); ``overwrite`` replaces it."""
    key = keys.result(task_id)
    if overwrite:
        cmd("DEL", key)
    cmd("RPUSH", key, record)
    cmd("LTRIM", key, 0, 0)
    cmd("PEXPIRE", key, ttl_ms)


def _queue_script(pipe: Any, script: Any, keys_: Sequence, args: Sequence,
                  inline: bool = False) -> None:
    """Queue a call of ``script`` on ``pipe`` without redis-py's Script, which makes every
    execute of a pipeline that holds one a round trip longer (SCRIPT EXISTS first). ``inline``
    sends the body (EVAL): inside MULTI, where an unknown sha would fail that one call and let
    the others apply. Otherwise EVALSHA, and the op runs under :func:`_loading`."""
    if inline:
        pipe.execute_command("EVAL", script.script, len(keys_), *keys_, *args)
    else:
        pipe.execute_command("EVALSHA", script.sha, len(keys_), *keys_, *args)


def _loading(client: Any, op: Any, *scripts: Any) -> Any:
    """``op`` (a pipeline of EVALSHA calls, safe to run again), run once more after loading
    ``scripts`` if the server did not know one (a new or restarted server: no call ran)."""
    def run():
        try:
            return op()
        except redis.exceptions.NoScriptError:
            for script in scripts:
                client.script_load(script.script)
            return op()

    return run


class _Commands:
    """Commands collected for one write (:func:`_raw_execute`), queued as on a pipeline."""

    def __init__(self):
        self.commands: list[tuple] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    def __len__(self) -> int:
        return len(self.commands)


def _raw_execute(client: redis.Redis, commands: list[tuple]) -> list:
    """Send ``commands`` in one write and read their raw replies, an error as its exception
    object. Unlike a redis-py pipeline this applies no reply callbacks, which would choke on
    the QUEUED replies of a MULTI sent inside a pipeline. A connection whose replies were not
    all read is dropped, never reused.

    The hot path of every round (a finish, its release and the next read): over hiredis the
    commands are packed and their replies taken from the connection's hiredis reader directly,
    which halves what redis-py's per-reply layers cost on top of the round trip itself."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        parser = getattr(conn, "_parser", None)
        if getattr(parser, "_reader", None) is not None and _pack_command is not None:
            conn.send_packed_command([b"".join([_pack_command(c) for c in commands])])
            return _read_replies_of(parser, len(commands))
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _read_replies_of(parser: Any, n: int) -> list:
    """``n`` replies from a redis-py hiredis parser's reader (reading the socket as needed);
    its reader gives error replies as redis-py exception objects."""
    reader = parser._reader
    replies: list = []
    while len(replies) < n:
        reply = reader.gets(False)
        if reply is _NOT_ENOUGH_DATA:
            parser.read_from_socket()
            continue
        if isinstance(reply, redis.ConnectionError):
            raise reply
        replies.append(reply)
    return replies


def _failed_in(replies: list) -> Exception | None:
    """The first error among the replies of a finish's EXEC, but a graph step the server had
    not the script of (run again at once, see RedisBroker._finish_graphs)."""
    return next((r for r in replies if isinstance(r, Exception)
                 and not isinstance(r, redis.exceptions.NoScriptError)), None)


def _graph_steps(replies: list, graphs: list[str], acked_streams: int) -> list[GraphStep]:
    """The dag_complete.lua replies of a finish transaction (queued just before its acks)."""
    if not graphs:
        return []
    first = len(replies) - acked_streams * 2 - len(graphs)
    return [(dag_id, replies[first + i]) for i, dag_id in enumerate(graphs)]


def _queue_watches(cmd: Any, dag_id: str, task_ids: Sequence[str], ttl_ms: int) -> None:
    """Announce that graph ``dag_id`` waits on ``task_ids`` (the sweepers' set, and the stream
    the children follow)."""
    until = time.time() + ttl_ms / 1000
    for task_id in task_ids:
        cmd("ZADD", keys.WATCHED, until, f"{dag_id} {task_id}")
        cmd("XADD", keys.WATCHES, "MAXLEN", "~", 10_000, "*", "dag", dag_id,
            "id", task_id, "until", repr(until))


def _watch_pair(member: bytes) -> tuple[str, str]:
    dag_id, _, task_id = member.decode().partition(" ")
    return dag_id, task_id


def _delayed_member(level: int, data: bytes) -> bytes:
    """A delayed-set member: the priority level byte, then the envelope (see promote.lua)."""
    return bytes((level,)) + data


class _BoundedConnect:
    """Connects within the connect timeout, handshake included (TLS, AUTH, CLIENT SETINFO): with
    the read timeout there, a server that accepts the socket but never answers (``rediss://``
    against a plain server, a frozen server) would hold a caller for 30 s per try."""

    socket_timeout: float | None
    socket_connect_timeout: float | None
    _sock: object

    def _connect(self):
        read_timeout = self.socket_timeout
        self.socket_timeout = self.socket_connect_timeout  # the new socket's timeout until ready
        try:
            return super()._connect()  # type: ignore[misc]
        finally:
            self.socket_timeout = read_timeout

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health)  # type: ignore[misc]
        # the verbs called by sha inside a finish's MULTI: a new connection (a new or restarted
        # server, a failover) knows them before its first finish
        for name in PRELOADED:
            self.send_command("SCRIPT", "LOAD", lua.load(name))  # type: ignore[attr-defined]
        for _ in PRELOADED:
            self.read_response()  # type: ignore[attr-defined]
        self._sock.settimeout(self.socket_timeout)  # type: ignore[attr-defined]


# Called by sha inside MULTI, on connections that load them when they connect: an unknown sha
# there would fail that call alone (the rest applies), so a finish whose graph step failed so
# (SCRIPT FLUSH while running) runs the step again at once (RedisBroker._finish_graphs).
PRELOADED = ("dag_complete",)


class _TCP(_BoundedConnect, redis.Connection):
    pass


class _TLS(_BoundedConnect, redis.SSLConnection):
    pass


class _Unix(_BoundedConnect, redis.UnixDomainSocketConnection):
    pass


_CONNECTIONS = {"redis": _TCP, "rediss": _TLS, "unix": _Unix}


def _client(url: str, read_timeout: float | None = 30.0) -> redis.Redis:
    """RESP2 (raw replies have one known shape). The read timeout bounds every command, so a
    connection that died silently is noticed (fetches block for at most ``block_ms``, far less);
    result waits bound their own reads (:meth:`RedisBroker.wait_result`). TCP keepalive is a TCP
    option: a unix socket connection refuses it."""
    scheme = url.split("://", 1)[0]
    tcp = {"socket_keepalive": True} if scheme != "unix" else {}
    return redis.Redis.from_url(url, protocol=2, socket_timeout=read_timeout,
                                socket_connect_timeout=CONNECT_TIMEOUT_S if read_timeout is None
                                else min(CONNECT_TIMEOUT_S, read_timeout), health_check_interval=0,
                                connection_class=_CONNECTIONS[scheme], **tcp)


def redacted(url: str) -> str:
    """``url`` without its password (in the user part or the query), for messages and logs."""
    netloc = urlsplit(url).netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)


def unavailable(exc: redis.RedisError) -> BrokerUnavailable:
    """The fastq error for a redis-py one (out of memory is its own kind: writes are refused)."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith(("OOM", "EXECABORT")):
        return BrokerOutOfMemory(f"redis is out of memory (maxmemory) and refused a write: {exc}")
    return BrokerUnavailable(f"redis unreachable: {exc}")


def _is_unavailable(exc: redis.ResponseError) -> bool:
    """A refusal that passes (out of memory, loading, a read-only replica), not an invalid command."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or \
        str(exc).startswith(_UNAVAILABLE_PREFIXES)


def _refusal(reply: Exception) -> BrokerRefused:
    """The error of one command in a pipeline run with ``raise_on_error=False``: raises
    BrokerUnavailable if the server refuses for now, else returns why it refused this command."""
    if isinstance(reply, _TRANSIENT) or (isinstance(reply, redis.ResponseError)
                                         and _is_unavailable(reply)):
        raise unavailable(reply) from reply  # type: ignore[arg-type]
    return reply if isinstance(reply, BrokerRefused) else Refused(str(reply))


def _translating(method):
    """Raise BrokerUnavailable instead of redis-py's transport errors, and BrokerRefused instead
    of its other refusals, so nothing outside fastq/broker needs to know about redis."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except _TRANSIENT as exc:
            raise unavailable(exc) from exc
        except redis.ResponseError as exc:
            if _is_unavailable(exc):
                raise unavailable(exc) from exc
            if isinstance(exc, BrokerRefused):
                raise
            raise Refused(str(exc)) from exc

    return call


class RedisBroker:
    """A broker on one Redis server. Safe to use after ``fork()``: redis-py reconnects per process.

    Every public method raises :class:`fastq.errors.BrokerUnavailable` for transport trouble
    (and its subclass ``BrokerOutOfMemory`` when the server refuses writes), and
    :class:`fastq.errors.BrokerRefused` when the server refuses a command as invalid."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _translate_public(cls)

    def _connect(self, url: str, read_timeout: float | None = 30.0) -> redis.Redis:
        """A client for ``url`` (memory:// overrides this to run the same code over fakeredis)."""
        return _client(url, read_timeout)

    def __init__(self, url: str, result_url: str | None = None, read_timeout: float | None = 30.0):
        self.url = url
        self._result_url = result_url
        self.client = self._connect(url, read_timeout)
        # Results live on the broker's Redis unless a separate result backend is configured.
        self.results = self._connect(result_url, read_timeout) if result_url and result_url != url \
            else self.client
        # Raw XREADGROUP replies: skip redis-py's per-entry dict building on the hot path.
        self.client.response_callbacks.pop("XREADGROUP", None)
        self.client.response_callbacks.pop("XAUTOCLAIM", None)
        self._known_queues: set[str] = set()
        # connections that load PRELOADED when they connect (fakeredis's do not)
        self._preloaded = issubclass(self.client.connection_pool.connection_class,
                                     _BoundedConnect)
        self._promote = self.client.register_script(lua.load("promote"))
        self._release = self.client.register_script(lua.load("release"))
        self._unique_claim = self.client.register_script(lua.load("unique_claim"))
        self._role_hold = self.client.register_script(lua.load("role_hold"))
        self._renew = self.client.register_script(lua.load("renew"))
        self._handback = self.client.register_script(lua.load("handback"))
        self._reprioritize = self.client.register_script(lua.load("reprioritize"))
        self._send = self.client.register_script(lua.load("send"))
        self._rate_acquire = self.client.register_script(lua.load("rate_acquire"))
        self._purge = self.client.register_script(lua.load("purge"))
        self._requeue = self.client.register_script(lua.load("requeue"))
        self._beat = {verb: self.client.register_script(lua.load(verb)) for verb in _BEAT_VERBS}
        self._forget_consumer = self.client.register_script(lua.load("forget_consumer"))
        self._dag_complete = self.client.register_script(lua.load("dag_complete"))
        self._dag_release = self.client.register_script(lua.load("dag_release"))
        self._local = threading.local()  # per thread: the connection of _command
        self.send_retry_s = 30.0
        self._reached = False  # a command has succeeded: from then on outages are ridden out

    def with_timeout(self, seconds: float) -> RedisBroker:
        """A broker on the same servers whose every command gives up after ``seconds`` (its own
        connections): for a caller that must not hang longer than that on a hung server."""
        broker = type(self)(self.url, self._result_url, read_timeout=seconds)
        broker.send_retry_s = self.send_retry_s
        return broker

    # -- producing -------------------------------------------------------------------------
    def _remember(self, queue: str, pipe=None) -> None:
        """Record the queue name once per process (for status, purge and maintenance). The cache
        is dropped whenever the server may have lost it (a lost connection, a group to create)."""
        if queue not in self._known_queues:
            (pipe or self.client).sadd(keys.QUEUES, queue)
            self._known_queues.add(queue)

    def _produce(self, op):
        """Run a producer command, riding out a Redis restart: reconnect with backoff for up to
        ``send_retry_s``, logging each failure. (A send whose reply was lost may be repeated:
        delivery is at-least-once.) A broker this process has never reached fails at once with
        the URL in the error: a wrong URL is not an outage to wait out."""
        delay, deadline = 0.05, None
        while True:
            try:
                reply = op()
                self._reached = True
                return reply
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # A restart without persistence loses the queue registry too: register again.
                self._known_queues.clear()
                if not self._reached:
                    raise BrokerUnavailable(
                        f"cannot reach the broker at {redacted(self.url)}: {exc} (check the URL: "
                        "scheme redis:// or rediss://, host, port, password)") from exc
                now = time.monotonic()
                deadline = deadline or now + self.send_retry_s
                if now >= deadline:
                    raise BrokerUnavailable(f"the broker at {redacted(self.url)} has been "
                                            f"unreachable for {self.send_retry_s:g} s: {exc}"
                                            ) from exc
                log.warning("redis unreachable while sending, retrying", error=str(exc),
                            retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def send(self, queue: str, level: int, data: bytes) -> None:
        def op():
            if queue not in self._known_queues:
                self._remember(queue)
            return self._command("XADD", keys.stream(queue, level), "*", "m", data)

        self._produce(op)

    def send_delayed(self, queue: str, level: int, data: bytes, due_ms: int) -> None:
        def op():
            if queue not in self._known_queues:
                self._remember(queue)
            return self._command("ZADD", keys.delayed(queue), due_ms,
                                 _delayed_member(level, data))

        self._produce(op)

    def _command(self, *args):
        """One command on this thread's own connection, skipping the pool and the client's
        dispatch: a third more single sends per second than ``execute_command``, which is what
        ``.delay()`` costs apart from the round trip. Errors are the client's: a lost connection
        raises ConnectionError (and reconnects on the next call), a refused command ResponseError."""
        conn = self._own_connection("conn", self.client)
        try:
            conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            raise

    def _own_connection(self, slot: str, client: redis.Redis):
        """This thread's connection named ``slot`` to ``client``'s server (made on first use, and
        again after a fork)."""
        local = self._local
        conn = getattr(local, slot, None)
        if conn is None or getattr(local, slot + "_pid", None) != os.getpid():
            pool = client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            setattr(local, slot, conn)
            setattr(local, slot + "_pid", os.getpid())
        return conn

    SEND_CHUNK = 1000  # messages per send.lua call: Redis runs one call at a time (~2 ms each)

    def send_many(self, items: Iterable[tuple[str, int, bytes, int]], atomic: bool = False) -> None:
        """Send in one round trip: pipelined send.lua calls of ``SEND_CHUNK`` messages of one
        queue each (a script spares the client redis-py's per-command cost, 3x faster than a
        pipeline of XADDs). ``atomic`` makes it one call that writes all or none: MULTI/EXEC would
        not roll back the writes made before one that fails."""
        items = list(items)
        if atomic:
            calls = [items]
        else:  # one queue per call: its keys share a hash tag (one cluster slot)
            by_queue: dict[str, list] = {}
            for item in items:
                by_queue.setdefault(item[0], []).append(item)
            calls = [q_items[i:i + self.SEND_CHUNK] for q_items in by_queue.values()
                     for i in range(0, len(q_items), self.SEND_CHUNK)]
        queues = {queue for queue, _, _, _ in items}

        def op():  # built afresh on every try: a pipeline forgets its commands when it fails
            pipe = self.client.pipeline(transaction=False)
            for queue in queues - self._known_queues:
                pipe.sadd(keys.QUEUES, queue)
            for call in calls:
                targets, args = _send_args(call)
                _queue_script(pipe, self._send, targets, [b"1" if atomic else b"0", *args])
            return pipe.execute()

        self._produce(_loading(self.client, op, self._send))
        self._known_queues |= queues

    def set_priority(self, queue: str, task_id: str, level: int) -> bool:
        """Move a task that is still waiting in ``queue`` to priority ``level``; False if it is
        not waiting there (already delivered, delayed, or unknown). Scans the queue: an admin
        operation, not a hot path."""
        from fastq._core import decode_message
        from fastq.errors import DecodeError

        for key in keys.streams(queue):
            start = "-"
            while True:
                entries = self.client.xrange(key, start, "+", count=1000)
                for entry_id, fields in entries:
                    try:
                        found = decode_message(fields.get(b"m", b"")).id == task_id
                    except DecodeError:
                        continue
                    if found:
                        if key == keys.stream(queue, level):
                            return True
                        return bool(self._reprioritize(
                            keys=[key, keys.stream(queue, level)],
                            args=[keys.GROUP, entry_id, level]))
                if len(entries) < 1000:
                    break
                start = "(" + entries[-1][0].decode()
        return False

    def promote(self, queue: str, now_ms: int, limit: int = 1000) -> tuple[int, int | None]:
        moved, next_due = self._promote(keys=[keys.delayed(queue), *keys.streams(queue)],
                                        args=[now_ms, limit])
        return int(moved), int(float(next_due)) if next_due else None

    def claim_unique(self, key: str, task_id: str, ttl_ms: int) -> str | None:
        owner = self._unique_claim(keys=[keys.unique(key)], args=[task_id, ttl_ms])
        return owner.decode() if isinstance(owner, bytes) else owner

    def release_unique(self, key: str, task_id: str) -> None:
        self._release(keys=[keys.unique(key)], args=[task_id])

    def hold_role(self, role: str, holder: str, ttl_ms: int) -> bool:
        return bool(self._role_hold(keys=[keys.role(role)], args=[holder, ttl_ms]))

    # -- consuming -------------------------------------------------------------------------
    def prepare(self, queues: Iterable[str]) -> None:
        """Create the groups of ``queues`` and register them, every time: prepare runs at start
        and whenever a group has to be (re)created, e.g. after a restart that lost the data."""
        pipe = self.client.pipeline(transaction=False)
        queues = list(queues)
        for queue in queues:
            pipe.sadd(keys.QUEUES, queue)
            for key in keys.streams(queue):
                # id 0: a group made after producers started must still see their messages.
                pipe.execute_command("XGROUP", "CREATE", key, keys.GROUP, "0", "MKSTREAM")
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply
        self._known_queues.update(queues)
        self._reached = True

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False, counts: list[int] | None = None,
              release: Release | None = None) -> list[Delivery]:
        """Read up to ``count`` entries per stream; ``own_pending`` re-reads this consumer's PEL.

        ``counts`` asks for up to ``counts[level]`` entries from each stream of that level instead
        (levels with 0 are not read), in one pipelined round trip and without blocking: how a
        child shares a fetch between levels that all have more waiting than it takes.

        ``release`` (workflow nodes the last round made ready) is sent in the same round trip,
        ahead of the read, which may then return them: their release costs no round trip of
        its own."""
        if counts is not None or release is not None:
            return self._fetch_pipelined(consumer, queues, count, block_ms, counts, release)
        stream_keys = [k for q in queues for k in keys.streams(q)]
        ids = ["0" if own_pending else ">"] * len(stream_keys)
        args = ["XREADGROUP", "GROUP", keys.GROUP, consumer, "COUNT", count]
        if block_ms and not own_pending:
            args += ["BLOCK", block_ms]
        try:
            reply = self.client.execute_command(*args, "STREAMS", *stream_keys, *ids)
        except redis.ResponseError as exc:
            if not _no_group(exc):
                raise
            # never prepared, or the stream was deleted under us (FLUSHDB, a restart): (re)create
            self.prepare(queues)
            reply = self.client.execute_command(*args, "STREAMS", *stream_keys, *ids)
        return _deliveries(reply)

    def _fetch_pipelined(self, consumer: str, queues: list[str], count: int, block_ms: int,
                         counts: list[int] | None, release: Release | None) -> list[Delivery]:
        pipe = self.client.pipeline(transaction=False)
        released, taking = self._queue_release(pipe, release, consumer, queues) \
            if release is not None else (0, False)
        # a node taken for this consumer is work in hand: the read must not block then
        self._queue_reads(pipe, consumer, queues, count, 0 if taking else block_ms, counts)
        replies = pipe.execute(raise_on_error=False)
        taken = self._check_released(replies[:released], release)
        return taken + self._read_replies(replies[released:], queues)

    def _check_released(self, replies: list, release: Release | None) -> list[Delivery]:
        """Raise the first error of a release sent in a pipeline (what was read with it is
        pending under this consumer, so nothing is lost); a script the server did not know (a
        new or restarted server) is loaded and the release sent again, deduplicated. Returns
        what the release read for this consumer (a node it sent to itself)."""
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:
            if not all(isinstance(r, redis.exceptions.NoScriptError) for r in failed):
                raise failed[0]
            self.graph_release(release)
            return []
        if release is not None:  # registered (SADD) with the send: no need again
            self._known_queues |= {queue for queue, *_ in release.sends}
        return [d for r in replies if isinstance(r, list) for d in _taken(r)]

    @staticmethod
    def _queue_reads(pipe: Any, consumer: str, queues: list[str], count: int, block_ms: int,
                     counts: list[int] | None) -> None:
        """One XREADGROUP of every stream (blocking up to ``block_ms``), or with ``counts`` one
        per distinct count of the levels asked for, not blocking."""
        if counts is None:
            stream_keys = [k for q in queues for k in keys.streams(q)]
            block = ("BLOCK", block_ms) if block_ms else ()
            pipe.execute_command("XREADGROUP", "GROUP", keys.GROUP, consumer, "COUNT", count,
                                 *block, "STREAMS", *stream_keys, *[">"] * len(stream_keys))
            return
        by_count: dict[int, list[str]] = {}
        for level, n in enumerate(counts):
            if n > 0:
                by_count.setdefault(n, []).extend(keys.stream(q, level) for q in queues)
        for n, stream_keys in by_count.items():
            pipe.execute_command("XREADGROUP", "GROUP", keys.GROUP, consumer, "COUNT", n,
                                 "STREAMS", *stream_keys, *[">"] * len(stream_keys))

    def _read_replies(self, replies: list, queues: list[str]) -> list[Delivery]:
        out: list[Delivery] = []
        lost_group = False
        for reply in replies:
            if isinstance(reply, redis.ResponseError) and _no_group(reply):
                lost_group = True
            elif isinstance(reply, Exception):
                raise reply
            else:
                out += _deliveries(reply)
        if lost_group:  # read again next round, from the re-created groups
            self.prepare(queues)
        return out

    def finish(self, done: Finish, result_ttl_ms: int) -> list[GraphStep]:
        """Write a round's outcomes and acknowledge its entries in one MULTI/EXEC.

        A transaction because Redis refuses a write under ``maxmemory`` (OOM) but would still run
        XACK/XDEL, which are not "deny on OOM" commands: in one pipeline the message would be gone
        and its outcome never written. A transaction holding a refused command is aborted whole
        (EXECABORT), so the entries stay pending and the child writes them again later.

        One terminal record per task: the record is pushed and the list trimmed to its first
        element, so a late write (a worker paused past its lease whose batch was re-run
        elsewhere) never adds a second record; the first outcome written wins. The re-run of a
        redelivered entry (``done.overwrite``: re-read by a restarted child, or reclaimed)
        replaces the record instead (DEL, then push).
        """
        pipe = self.results.pipeline(transaction=True)
        self._queue_results(pipe.execute_command, done, result_ttl_ms)
        if self.results is not self.client:  # stored (and checked) before anything is acked
            if done.results or done.states:
                pipe.execute()
            pipe = self.client.pipeline(transaction=True)
        graphs = self._queue_settle(pipe, done, result_ttl_ms)
        replies = pipe.execute(raise_on_error=False)
        refused = _failed_in(replies)
        if refused is not None:
            raise refused
        return self._finish_graphs(_graph_steps(replies, graphs, len(done.acks)), done,
                                   result_ttl_ms)

    def finish_and_fetch(self, done: Finish, result_ttl_ms: int, consumer: str,
                         queues: list[str], count: int, counts: list[int] | None = None,
                         release: Release | None = None
                         ) -> tuple[list[GraphStep], list[Delivery]]:
        """:meth:`finish`, then send ``release`` and read the next batch (not blocking), all in
        one round trip: MULTI ... EXEC, then the release and the XREADGROUPs, in one pipeline.
        If the transaction fails, this raises; what the read delivered is pending under this
        consumer and is run again from there (``own_pending``), so nothing is lost."""
        if self.results is not self.client:  # two stores: the outcomes first, on their own
            steps = self.finish(done, result_ttl_ms)
            return steps, self.fetch(consumer, queues, count, 0, counts=counts, release=release)
        batch = _Commands()
        cmd = batch.execute_command
        cmd("MULTI")
        self._queue_results(cmd, done, result_ttl_ms)
        graphs = self._queue_settle(batch, done, result_ttl_ms)
        cmd("EXEC")
        queued = len(batch)
        released = self._queue_release(batch, release, consumer, queues)[0] \
            if release is not None else 0
        self._queue_reads(batch, consumer, queues, count, 0, counts)
        replies = _raw_execute(self.client, batch.commands)
        # a command refused when queued (OOM) makes EXEC fail too (EXECABORT): nothing applied
        refused = next((r for r in replies[:queued] if isinstance(r, Exception)), None)
        if refused is None:
            refused = _failed_in(replies[queued - 1])
        if refused is not None:
            raise refused
        taken = self._check_released(replies[queued:queued + released], release)
        steps = self._finish_graphs(_graph_steps(replies[queued - 1], graphs, len(done.acks)),
                                    done, result_ttl_ms)
        return steps, taken + self._read_replies(replies[queued + released:], queues)

    def _finish_graphs(self, steps: list[GraphStep], done: Finish, result_ttl_ms: int
                       ) -> list[GraphStep]:
        """``steps``, with those whose dag_complete.lua call the server did not know (its
        scripts flushed since this connection loaded them) run again now, idempotent."""
        lost = {dag_id for dag_id, reply in steps
                if isinstance(reply, redis.exceptions.NoScriptError)}
        if not lost:
            return steps
        log.warning("the server forgot fastq's scripts (SCRIPT FLUSH?); graph steps run again",
                    graphs=len(lost))
        again = dict(self.graph_complete([n for n in done.nodes if n[0] in lost], result_ttl_ms))
        return [(dag_id, again.get(dag_id, reply)) for dag_id, reply in steps]

    @staticmethod
    def _queue_results(cmd: Any, done: Finish, result_ttl_ms: int) -> None:
        for task_id, record in done.results:
            _push_result(cmd, task_id, record, result_ttl_ms, task_id in done.overwrite)
        for task_id, record in done.states:
            cmd("SET", keys.state(task_id), record, "PX", result_ttl_ms)

    def _queue_settle(self, pipe: Any, done: Finish, result_ttl_ms: int) -> list[str]:
        """Queue the round's dead letters, retries, releases, graph outcomes and then its acks
        (last: nothing is acked ahead of its outcome); the graph ids, in call order."""
        cmd = pipe.execute_command
        for queue, fields in done.dead:
            flat = [x for kv in fields.items() for x in kv]
            cmd("XADD", keys.dlq(queue), "*", *flat)
        for queue, level, due_ms, data in done.delayed:
            cmd("ZADD", keys.delayed(queue), due_ms, _delayed_member(level, data))
        for unique_key, owner in done.releases:
            _queue_script(pipe, self._release, [keys.unique(unique_key)], [owner], inline=True)
        for queue, dag_id, node_id, ttl_ms in done.ran_here:  # before the graph lists them
            cmd("SET", keys.node_sent(queue, dag_id, node_id), b"1", "PX", ttl_ms)
        for fields, maxlen in done.events:  # written with the outcomes they tell of, or not at all
            cmd("XADD", keys.EVENTS, "MAXLEN", "~", maxlen, "*",
                *[x for kv in fields.items() for x in kv])
        graphs = self._complete_nodes(pipe, done.nodes, result_ttl_ms,
                                      inline=not self._preloaded)
        for skey, ids in done.acks.items():
            cmd("XACK", skey, keys.GROUP, *ids)
            cmd("XDEL", skey, *ids)
        return graphs

    # -- workflow graphs (fastq/workflows/) ------------------------------------------------
    GRAPH_CHUNK = 2000  # hash fields per HSET of a submission

    def graph_submit(self, dag_id: str, fields: dict[str, bytes], roots: Sequence[SendItem],
                     ttl_ms: int, watches: Sequence[str] = ()) -> None:
        """Write the graph's waiting nodes, announce the tasks outside it that it waits for
        (``watches``, depends_on), and then send its roots, in one MULTI/EXEC: a refused write
        (OOM) applies nothing, so a failed submission leaves nothing runnable."""
        flat = [x for kv in fields.items() for x in kv]
        by_queue: dict[str, list] = {}
        for item in roots:
            by_queue.setdefault(item[0], []).append(item)

        def op():
            pipe = self.client.pipeline(transaction=True)
            cmd = pipe.execute_command
            key = keys.graph(dag_id)
            step = self.GRAPH_CHUNK * 2
            for i in range(0, len(flat), step):
                cmd("HSET", key, *flat[i:i + step])
            cmd("PEXPIRE", key, ttl_ms)
            cmd("ZADD", keys.GRAPHS, int(time.time() * 1000) + ttl_ms, dag_id)
            _queue_watches(cmd, dag_id, watches, ttl_ms)
            for queue, items in by_queue.items():
                cmd("SADD", keys.QUEUES, queue)
                for i in range(0, len(items), self.SEND_CHUNK):
                    targets, args = _send_args(items[i:i + self.SEND_CHUNK])
                    _queue_script(pipe, self._send, targets, [b"0", *args], inline=True)
            return pipe.execute()

        self._produce(op)
        self._known_queues |= set(by_queue)

    def watch(self, dag_id: str, task_ids: Sequence[str], ttl_ms: int) -> None:
        def op():
            pipe = self.client.pipeline(transaction=True)
            _queue_watches(pipe.execute_command, dag_id, task_ids, ttl_ms)
            return pipe.execute()

        self._produce(op)

    def _complete_nodes(self, pipe: Any, nodes: Sequence[tuple[str, str, str, bytes]],
                        finished_ttl_ms: int, inline: bool = False) -> list[str]:
        """Queue one dag_complete.lua call per graph on ``pipe``; the graph ids, in call order."""
        graphs: dict[str, list] = {}
        for dag_id, node_id, kind, record in nodes:
            graphs.setdefault(dag_id, []).extend((node_id, kind, record))
        now_ms = int(time.time() * 1000)
        for dag_id, triples in graphs.items():
            _queue_script(pipe, self._dag_complete, [keys.graph(dag_id), keys.graph_outbox(dag_id)],
                          [now_ms, finished_ttl_ms, 0, 0, *triples], inline=inline)
        return list(graphs)

    def graph_complete(self, nodes: Sequence[tuple[str, str, str, bytes]],
                       finished_ttl_ms: int) -> list[GraphStep]:
        """Record outcomes of nodes outside a worker's round (depends_on's waits on tasks sent
        separately): (dag id, node id, 's' or 'f', record), idempotent like a round's."""
        def op():
            pipe = self.client.pipeline(transaction=False)
            graphs = self._complete_nodes(pipe, nodes, finished_ttl_ms)
            return list(zip(graphs, pipe.execute(), strict=True))

        return _loading(self.client, op, self._dag_complete)()

    def live_watches(self) -> tuple[list[tuple[str, str, float]], str]:
        """Every (graph id, task id, until) of a graph waiting on a task sent outside it, and
        the cursor to follow new ones from."""
        live, cursor = self._followed(keys.WATCHED, keys.WATCHES)
        return [(*_watch_pair(member), until) for member, until in live], cursor

    def watches_since(self, cursor: str) -> tuple[str, list[tuple[str, str, float]]]:
        cursor, entries = self._entries_since(keys.WATCHES, cursor)
        return cursor, [(f[b"dag"].decode(), f[b"id"].decode(), float(f[b"until"]))
                        for f in entries]

    def watched(self, offset: int, count: int) -> list[tuple[str, str]]:
        """``count`` (graph id, task id) waits from ``offset`` on, after dropping those past
        their graph's deadline (the sweeper's list)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.WATCHED, "-inf", time.time())
        pipe.zrange(keys.WATCHED, offset, offset + count - 1)
        return [_watch_pair(member) for member in pipe.execute()[1]]

    def unwatch(self, pairs: Sequence[tuple[str, str]]) -> None:
        if pairs:
            self.client.zrem(keys.WATCHED, *(f"{dag_id} {task_id}" for dag_id, task_id in pairs))

    def graph_collect(self, dag_id: str, min_age_ms: int, finished_ttl_ms: int) -> GraphStep:
        reply = self._dag_complete(keys=[keys.graph(dag_id), keys.graph_outbox(dag_id)],
                                   args=[int(time.time() * 1000), finished_ttl_ms, 1, min_age_ms])
        return dag_id, reply

    def graph_release(self, release: Release) -> None:
        """Each send is its own single-queue step (dag_release.lua, deduplicated by node id),
        so a graph may span queues (cluster slots); the outbox is cleared after them."""
        def op():
            pipe = self.client.pipeline(transaction=False)
            self._queue_release(pipe, release)
            return pipe.execute()

        self._produce(_loading(self.client, op, self._dag_release))
        self._known_queues |= {queue for queue, *_ in release.sends}

    def _queue_release(self, pipe: Any, release: Release, consumer: str | None = None,
                       queues: Sequence[str] = ()) -> tuple[int, bool]:
        """Queue ``release``'s commands on ``pipe`` (the records of nodes failed upstream go
        first, on a separate result store at once); returns how many were queued, and whether
        ``consumer`` takes one of the sent nodes at once: the first sent ready into one of its
        ``queues`` (a chain's next step is run by the worker that ran the step before, and a
        worker blocked on the stream elsewhere is not woken for it)."""
        start = len(pipe)
        taker = [keys.GROUP, consumer] if consumer is not None else []
        if release.failures:  # before the outbox forgets the nodes
            target = pipe if self.results is self.client else \
                self.results.pipeline(transaction=False)
            for task_id, record in release.failures:
                _push_result(target.execute_command, task_id, record, release.result_ttl_ms,
                             False)
            if target is not pipe:
                target.execute()
        for queue in {queue for queue, *_ in release.sends} - self._known_queues:
            pipe.execute_command("SADD", keys.QUEUES, queue)
        for queue, level, due_ms, data, node_id, dag_id in release.sends:
            target = keys.delayed(queue) if due_ms else keys.stream(queue, level)
            member = _delayed_member(level, data) if due_ms else data
            args = [due_ms, member, release.marker_ttl_ms]
            if taker and not due_ms and queue in queues:
                args += taker
                taker = []
            _queue_script(pipe, self._dag_release, [target, keys.node_sent(queue, dag_id, node_id)],
                          args)
        for dag_id, node_ids in release.sent:
            if node_ids:
                pipe.execute_command("HDEL", keys.graph_outbox(dag_id), *node_ids)
        if release.finished:
            pipe.execute_command("ZREM", keys.GRAPHS, *release.finished)
        return len(pipe) - start, consumer is not None and not taker

    def running_graphs(self, count: int = 1000) -> list[str]:
        return [g.decode() for g in self.client.zrange(keys.GRAPHS, 0, count - 1)]

    def running_graph_count(self) -> int:
        return self.client.zcard(keys.GRAPHS)

    def graph_node_counts(self, graphs: int = 1000) -> tuple[int, int]:
        ids = self.running_graphs(graphs)
        if not ids:
            return 0, 0
        with self.client.pipeline(transaction=False) as pipe:
            for dag_id in ids:
                pipe.hmget(keys.graph(dag_id), "left", "wait")
            rows = pipe.execute()
        waiting = running = 0
        for left, wait in rows:
            if left is None:  # finished (expired) since it was listed
                continue
            w = int(wait or 0)  # (a graph submitted before "wait" was kept: all running)
            waiting += w
            running += max(int(left) - w, 0)
        return waiting, running

    def save_group(self, group_id: str, data: bytes, ttl_ms: int) -> None:
        self.results.set(keys.group_meta(group_id), data, px=ttl_ms)

    def load_group(self, group_id: str) -> bytes | None:
        return self.results.get(keys.group_meta(group_id))

    def take_tokens(self, key: str, rate_per_s: float, n: int, capacity: float,
                    now_ms: int | None = None) -> tuple[int, int]:
        """Token bucket (``lua/rate_acquire.lua``, refilled by the Redis clock unless ``now_ms``
        is given): take up to ``n`` tokens; (granted, ms until a token is free again)."""
        granted, wait_ms = self._rate_acquire(
            keys=[key], args=[repr(float(rate_per_s)), int(n), repr(float(capacity)),
                              "" if now_ms is None else int(now_ms)])
        return int(granted), int(wait_ms)

    def reclaim(self, consumer: str, queues: list[str], min_idle_ms: int,
                count: int) -> list[Delivery]:
        """XAUTOCLAIM entries idle longer than ``min_idle_ms`` (their lease ran out) to ``consumer``.

        XAUTOCLAIM scans at most COUNT x 10 pending entries a call, so the cursor is followed.
        """
        out: list[Delivery] = []
        for queue in queues:
            for key in keys.streams(queue):
                skey, level = _stream_info(key)
                cursor = "0-0"
                for _ in range(100):
                    try:
                        reply = self.client.execute_command(
                            "XAUTOCLAIM", key, keys.GROUP, consumer, min_idle_ms, cursor,
                            "COUNT", count)
                    except redis.ResponseError as exc:
                        if _no_group(exc):
                            break
                        raise
                    cursor, entries = reply[0], reply[1]
                    for entry_id, fields in entries:
                        out.append((skey, level, entry_id, fields[1] if fields else None))
                    for entry_id in (reply[2] if len(reply) > 2 else ()):  # deleted meanwhile
                        self.client.execute_command("XACK", key, keys.GROUP, entry_id)
                    if cursor in (b"0-0", "0-0") or len(out) >= count:
                        break
        return out

    def delivery_counts(self, deliveries: list[Delivery]) -> list[int]:
        """How many times each entry has been delivered (XPENDING's counter)."""
        if not deliveries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for skey, _level, entry_id, _data in deliveries:
            pipe.xpending_range(skey, keys.GROUP, entry_id, entry_id, 1)
        return [rows[0]["times_delivered"] if rows else 0 for rows in pipe.execute()]

    def still_owned(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries that are still pending for ``consumer`` (not handed back meanwhile)."""
        if not deliveries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for skey, _level, entry_id, _data in deliveries:
            pipe.xpending_range(skey, keys.GROUP, entry_id, entry_id, 1, consumer)
        return [d for d, rows in zip(deliveries, pipe.execute(), strict=True) if rows]

    def renew(self, consumer: str, queues: list[str]) -> int:
        """Reset the idle time of everything ``consumer`` holds: its leases stay fresh."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in keys.streams(queue):
                self._renew(keys=[key], args=[keys.GROUP, consumer], client=pipe)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))

    def hand_back(self, consumer: str, queues: list[str], keep: bytes = b"") -> int:
        """Return ``consumer``'s prefetched messages (all but ``keep``) to the queue."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in keys.streams(queue):
                self._handback(keys=[key], args=[keys.GROUP, consumer, keep], client=pipe)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))

    def consumers(self, queue: str) -> list[ConsumerStats]:
        """The consumers in the groups of ``queue``'s streams: entries held over all levels, and
        the least time since any of its streams last saw it."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys.streams(queue):
            pipe.xinfo_consumers(key, keys.GROUP)
        seen: dict[str, ConsumerStats] = {}
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):  # no stream or group at this level
                continue
            for row in reply:
                name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
                st = seen.setdefault(name, ConsumerStats(name, 0, int(row["idle"])))
                st.pending += int(row["pending"])
                st.idle_ms = min(st.idle_ms, int(row["idle"]))
        return sorted(seen.values(), key=lambda st: st.name)

    def forget_consumer(self, consumer: str, queues: list[str]) -> bool:
        """Remove ``consumer`` from the groups of ``queues`` where it holds nothing (one atomic
        check-and-delete per queue, ``lua/forget_consumer.lua``); True when it is in none of them
        any more. A consumer that still holds entries is kept: they come back by reclaim."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            self._forget_consumer(keys=keys.streams(queue), args=[keys.GROUP, consumer],
                                  client=pipe)
        return all(reply == 1 for reply in pipe.execute())

    def entry(self, skey: str, entry_id: bytes) -> bytes | None:
        """The envelope of one stream entry (None if it is gone)."""
        found = self.client.xrange(skey, entry_id, entry_id)
        return found[0][1].get(b"m") if found else None

    # -- revocations -----------------------------------------------------------------------
    def revoke(self, task_ids: list[str], terminate: bool, ttl_s: float) -> None:
        until = time.time() + ttl_s
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.REVOKED, "-inf", time.time())
        for task_id in task_ids:
            pipe.zadd(keys.REVOKED, {task_id: until})
            pipe.xadd(keys.REVOCATIONS, {"id": task_id, "until": until, "terminate": int(terminate)},
                      maxlen=10_000, approximate=True)
        pipe.execute()

    def live_revocations(self) -> tuple[dict[str, float], str]:
        """Every revocation still in force, and the cursor to follow new ones from."""
        live, cursor = self._followed(keys.REVOKED, keys.REVOCATIONS)
        return {k.decode(): v for k, v in live}, cursor

    def revocations_since(self, cursor: str) -> tuple[str, list[tuple[str, float, bool]]]:
        cursor, entries = self._entries_since(keys.REVOCATIONS, cursor)
        return cursor, [(f[b"id"].decode(), float(f[b"until"]), f[b"terminate"] == b"1")
                        for f in entries]

    def _followed(self, zset: str, stream: str) -> tuple[list[tuple[bytes, float]], str]:
        """Members of ``zset`` still in force (score: epoch s until which), and the cursor of the
        ``stream`` that announces new ones, read together so none falls between them."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(zset, time.time(), "+inf", withscores=True)
        pipe.xrevrange(stream, count=1)
        live, last = pipe.execute()
        return live, last[0][0].decode() if last else "0-0"

    def _entries_since(self, stream: str, cursor: str) -> tuple[str, list[dict]]:
        reply = self.client.xread({stream: cursor}, count=1000)
        out = []
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                out.append(fields)
        return cursor, out

    # -- remote control ------------------------------------------------------------------
    def broadcast(self, command_id: str, data: bytes) -> None:
        self.client.xadd(keys.CONTROL, {"id": command_id, "m": data}, maxlen=1000,
                         approximate=True)

    def control_cursor(self) -> str:
        last = self.client.xrevrange(keys.CONTROL, count=1)
        return last[0][0].decode() if last else "0-0"

    def commands_since(self, cursor: str) -> tuple[str, list[tuple[str, bytes]]]:
        cursor, entries = self._entries_since(keys.CONTROL, cursor)
        return cursor, [(f[b"id"].decode(), f[b"m"]) for f in entries]

    def reply(self, command_id: str, data: bytes, ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(keys.control_reply(command_id), data)
        pipe.pexpire(keys.control_reply(command_id), ttl_ms)
        pipe.execute()

    def replies(self, command_id: str, timeout: float, limit: int | None) -> list[bytes]:
        key = keys.control_reply(command_id)
        deadline = time.monotonic() + timeout
        out: list[bytes] = []
        while limit is None or len(out) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self.client.blpop([key], timeout=max(left, 0.01))
            if got is not None:
                out.append(got[1])
        return out

    def set_state(self, task_id: str, record: bytes, ttl_ms: int) -> None:
        self.results.set(keys.state(task_id), record, px=ttl_ms)

    def peek_state(self, task_id: str) -> bytes | None:
        return self.results.get(keys.state(task_id))

    # -- results ---------------------------------------------------------------------------
    WAIT_MARGIN_S = 1.0  # a result wait gives up this long after its timeout if Redis is silent

    def _wait_args(self, key: str, timeout: float) -> tuple:
        return ("BLMOVE", key, key, "RIGHT", "LEFT", timeout)

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Block until the record exists. BLMOVE of a list onto itself returns the element and
        leaves it in place, so any number of waiters wake on one push and no polling is needed.

        The reply is awaited for at most ``timeout`` + ``WAIT_MARGIN_S``: a frozen server or a
        path that drops packets ends the wait on time (None, logged) instead of hanging."""
        key = keys.result(task_id)
        if timeout is not None and timeout <= 0:
            return self.results.lindex(key, 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        stale_ok = True  # an idle connection the server has closed (a restart) is made again once
        while True:
            conn = self._own_connection("waiter", self.results)
            reused = conn.is_connected
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            if not reused:  # connecting (handshake included) counts against the wait too
                conn.socket_connect_timeout = CONNECT_TIMEOUT_S if left is None else \
                    min(CONNECT_TIMEOUT_S, left + self.WAIT_MARGIN_S)
            try:
                conn.send_packed_command(conn.pack_command(*self._wait_args(
                    key, 0 if left is None else left)), check_health=False)
                return conn.read_response(
                    timeout=None if left is None else left + self.WAIT_MARGIN_S)
            except redis.TimeoutError:
                conn.disconnect()  # the reply may still come: never read it as another one's
                log.warning("redis did not answer a result wait in time", task_id=task_id,
                            timeout=timeout)
                return None
            except redis.ConnectionError:
                conn.disconnect()
                if not (reused and stale_ok):
                    raise
                stale_ok = False

    def peek_result(self, task_id: str) -> bytes | None:
        return self.results.lindex(keys.result(task_id), 0)

    PEEK_CHUNK = 10_000  # result reads per pipeline in peek_results

    def peek_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The terminal records of many tasks (None where there is none), one pipeline per
        ``PEEK_CHUNK`` ids."""
        out: list[bytes | None] = []
        for start in range(0, len(task_ids), self.PEEK_CHUNK):
            pipe = self.results.pipeline(transaction=False)
            for task_id in task_ids[start:start + self.PEEK_CHUNK]:
                pipe.lindex(keys.result(task_id), 0)
            out += pipe.execute()
        return out

    def forget_result(self, task_id: str) -> None:
        self.forget_results([task_id])

    def forget_results(self, task_ids: Iterable[str]) -> None:
        """Drop the terminal records and states of ``task_ids``, in one round trip."""
        pipe = self.results.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.delete(keys.result(task_id))
            pipe.delete(keys.state(task_id))
        if len(pipe):
            pipe.execute()

    # -- monitoring and housekeeping -------------------------------------------------------
    def heartbeat(self, consumer: str, info: bytes, ttl_ms: int) -> None:
        self.client.set(keys.worker(consumer), info, px=ttl_ms)

    def workers(self) -> list[bytes]:
        return self._live_values(keys.WORKER_PATTERN)

    def report_health(self, worker_name: str, info: bytes, ttl_ms: int) -> None:
        self.client.set(keys.health(worker_name), info, px=ttl_ms)

    def health_reports(self) -> list[bytes]:
        return self._live_values(keys.HEALTH_PATTERN)

    def _live_values(self, pattern: str) -> list[bytes]:
        """The values of the (TTL) keys matching ``pattern`` that have not expired."""
        names = list(self.client.scan_iter(match=pattern, count=1000))
        return [v for v in self.client.mget(names) if v] if names else []

    def queues(self) -> list[str]:
        return sorted(q.decode() for q in self.client.smembers(keys.QUEUES))

    # -- events (fastq/events/) ---------------------------------------------------------------
    @property
    def db(self) -> int:
        return int(self.client.connection_pool.connection_kwargs.get("db", 0) or 0)

    def publish_events(self, entry: dict[str, Any] | None, maxlen: int,
                       celery_message: bytes | None, routing_key: str) -> int:
        """A batch of events: when given, one entry on fastq's capped stream (``maxlen``
        entries, about) and one Celery event message on Celery's channel for ``routing_key``,
        in one round trip. Returns how many listened on Celery's channel (0: not published)."""
        pipe = self.client.pipeline(transaction=False)
        if entry is not None:
            pipe.xadd(keys.EVENTS, entry, maxlen=maxlen, approximate=True)
        if celery_message is not None:
            pipe.publish(keys.celery_event_channel(self.db, routing_key), celery_message)
        replies = pipe.execute()
        return replies[-1] if celery_message is not None else 0

    def events_since(self, cursor: str, block_ms: int | None, count: int = 1000,
                     ) -> tuple[str, list[dict[bytes, bytes]]]:
        """Entries of fastq's event stream after ``cursor`` ("$": from now on)."""
        if cursor == "$":  # pinned to the last entry, so that nothing between two calls is missed
            last = self.client.xrevrange(keys.EVENTS, count=1)
            cursor = last[0][0].decode() if last else "0-0"
        reply = self.client.xread({keys.EVENTS: cursor}, count=count, block=block_ms)
        if not reply:
            return cursor, []
        entries = reply[0][1]
        return entries[-1][0].decode(), [fields for _id, fields in entries]

    def celery_mailbox(self) -> Any:
        """A pub/sub subscription to Celery's remote-control broadcasts (``app.control``)."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.celery_pidbox_channel(self.db))
        return pubsub

    def celery_reply(self, exchange: str, routing_key: str, message: bytes) -> int:
        """Deliver a reply to the kombu queues bound to ``exchange`` with ``routing_key`` (a
        direct exchange in kombu's Redis transport); returns how many got it."""
        sent = 0
        for member in self.client.smembers(keys.KOMBU_BINDINGS % exchange):
            key, _pattern, queue = member.decode().split(keys.KOMBU_PRIORITY_SEP)
            if key == routing_key:
                self.client.lpush(queue, message)
                sent += 1
        return sent

    def delayed_count(self, queue: str) -> int:
        return self.client.zcard(keys.delayed(queue))

    def waiting_age_ms(self, queue: str) -> int:
        streams = keys.streams(queue)
        pipe = self.client.pipeline(transaction=False)
        for key in streams:
            pipe.xinfo_groups(key)
        replies = pipe.execute(raise_on_error=False)
        pipe = self.client.pipeline(transaction=False)
        for key, groups in zip(streams, replies, strict=True):
            group = next((g for g in groups if g["name"] == keys.GROUP.encode()), None
                         ) if isinstance(groups, list) else None
            # after the group's last delivered id, nothing was handed to a consumer yet
            start = "-" if group is None else b"(" + group["last-delivered-id"]
            pipe.xrange(key, min=start, max="+", count=1)
        now = int(time.time() * 1000)
        ages = [now - _parse_id(first[0][0])[0]
                for first in pipe.execute(raise_on_error=False) if isinstance(first, list) and first]
        return max(max(ages, default=0), 0)

    def stats(self, queue: str) -> list[StreamStats]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys.streams(queue):
            pipe.xlen(key)
            pipe.execute_command("XPENDING", key, keys.GROUP)
            pipe.execute_command("XRANGE", key, "-", "+", "COUNT", 1)
            pipe.execute_command("XINFO", "STREAM", key)
        replies = pipe.execute(raise_on_error=False)
        now = int(time.time() * 1000)
        out = []
        for level in range(keys.LEVELS):
            depth, pending, first, info = replies[4 * level: 4 * level + 4]
            n_pending = _pending_count(pending)
            age = now - _parse_id(first[0][0])[0] if isinstance(first, list) and first else 0
            out.append(StreamStats(queue, level, depth if isinstance(depth, int) else 0,
                                   n_pending, max(age, 0), _entries_added(info)))
        return out

    # -- dead letters ----------------------------------------------------------------------
    def dead_letters(self, queue: str, count: int | None = 100, start: str = "-",
                     end: str = "+") -> list[tuple[bytes, dict]]:
        """Dead letters of ``queue`` with entry ids from ``start`` to ``end`` (XRANGE bounds: a
        leading ``(`` excludes the bound), oldest first, at most ``count`` (None: all)."""
        return self.client.xrange(keys.dlq(queue), min=start, max=end, count=count)

    def dead_letter_count(self, queue: str) -> int:
        return self.client.xlen(keys.dlq(queue))

    def claim_alert(self, alert_key: str, ttl_ms: int) -> bool:
        return bool(self.client.set(keys.alert_sent(alert_key), b"1", nx=True, px=ttl_ms))

    def requeue_dead(self, entries: Sequence[tuple[str, str, int]]
                     ) -> list[str | None | BrokerRefused]:
        """Move dead letters (queue, entry id, level) back to their ready streams, one
        ``requeue.lua`` call each, all in one round trip (callers chunk). Per entry: the new
        stream entry id, None if it is gone (requeued or purged meanwhile), or why it was refused
        (not a fastq envelope)."""
        if not entries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for queue in {queue for queue, _, _ in entries}:
            pipe.sadd(keys.QUEUES, queue)  # a queue named explicitly may be new to the set
        for queue, entry_id, level in entries:
            self._requeue(keys=[keys.dlq(queue), keys.stream(queue, level)], args=[entry_id],
                          client=pipe)
        replies = pipe.execute(raise_on_error=False)[-len(entries):]
        return [_refusal(reply) if isinstance(reply, Exception)
                else reply.decode() if isinstance(reply, bytes) else reply for reply in replies]

    DELETE_CHUNK = 1000  # entry ids per XDEL in delete_dead

    def delete_dead(self, queue: str, entry_ids: Sequence[str]) -> int:
        """Delete these dead letters of ``queue`` (one round trip); how many existed."""
        if not entry_ids:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(entry_ids), self.DELETE_CHUNK):
            pipe.xdel(keys.dlq(queue), *entry_ids[start:start + self.DELETE_CHUNK])
        return sum(pipe.execute())

    def purge_dead(self, queue: str) -> int:
        """Delete every dead letter of ``queue``; how many there were."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xlen(keys.dlq(queue))
        pipe.delete(keys.dlq(queue))
        return pipe.execute()[0]

    # -- beat leadership and fires (fastq/beat.py; lua/beat_*.lua) --------------------------
    def beat_acquire(self, beat_id: str, lease_ms: int, now_ms: int) -> tuple[bool, int | None]:
        ok, info = self._beat["beat_acquire"](keys=[keys.BEAT_LEADER, keys.BEAT_SEEN],
                                              args=[beat_id, lease_ms, now_ms])
        return bool(ok), int(info) if info is not None else None

    def beat_renew(self, beat_id: str, lease_ms: int, now_ms: int) -> bool:
        return self._beat["beat_renew"](keys=[keys.BEAT_LEADER, keys.BEAT_SEEN],
                                        args=[beat_id, lease_ms, now_ms]) == 1

    def beat_release(self, beat_id: str, now_ms: int) -> bool:
        return self._beat["beat_release"](keys=[keys.BEAT_LEADER, keys.BEAT_SEEN],
                                          args=[beat_id, now_ms]) == 1

    def beat_fire(self, beat_id: str, entry: str, fire_ms: int, marker_ttl_ms: int,
                  messages: Sequence[tuple[str, int, bytes, int]]) -> int:
        """Send ``messages`` (queue, level, data, due ms) as ``entry``'s fire at ``fire_ms`` and
        record it, atomically: 1 sent, 0 already fired, -1 not the leader."""
        targets, pairs = _send_args(list(messages))
        args: list = [beat_id, entry, fire_ms, marker_ttl_ms]
        for (queue, *_), due, payload in zip(messages, pairs[::2], pairs[1::2], strict=True):
            args += (queue, due, payload)
        return int(self._beat["beat_fire"](
            keys=[keys.BEAT_LEADER, keys.beat_fired(entry, fire_ms), keys.BEAT_LAST, keys.QUEUES,
                  *targets], args=args))

    def beat_advance(self, beat_id: str, entry: str, ms: int) -> bool:
        return self._beat["beat_advance"](keys=[keys.BEAT_LEADER, keys.BEAT_LAST],
                                          args=[beat_id, entry, ms]) == 1

    def beat_last_fired(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(keys.BEAT_LAST).items()}

    def purge(self, queue: str) -> int:
        """Drop the messages waiting in ``queue`` (all levels); entries already delivered stay,
        so in-flight tasks finish (or are reclaimed) normally. One ``purge.lua`` call a level."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys.streams(queue):
            self._purge(keys=[key], args=[keys.GROUP], client=pipe)
        return sum(n for n in pipe.execute(raise_on_error=False) if isinstance(n, int))

    def trim(self, queue: str) -> int:
        """Safety net against stream growth: XTRIM MINID below everything not yet acknowledged.

        Acked entries are already XDELed; this removes leftovers (e.g. from an ack whose XDEL was
        lost) without ever touching an entry that is pending or not yet delivered.
        """
        removed = 0
        for key in keys.streams(queue):
            try:
                groups = self.client.xinfo_groups(key)
                pending = self.client.xpending(key, keys.GROUP)
            except redis.ResponseError:  # no stream or no group yet
                continue
            group = next((g for g in groups if g["name"] == keys.GROUP.encode()), None)
            if group is None:
                continue
            ms, seq = _parse_id(group["last-delivered-id"])
            floor = (ms, seq + 1)  # everything after last-delivered is undelivered
            if pending["pending"]:
                floor = min(floor, _parse_id(pending["min"]))
            removed += self.client.execute_command("XTRIM", key, "MINID", f"{floor[0]}-{floor[1]}")
        return removed

    def close(self) -> None:
        for slot in ("conn", "waiter"):  # this thread's; other threads' close with them
            conn = getattr(self._local, slot, None)
            if conn is not None:
                conn.disconnect()
                setattr(self._local, slot, None)
        self.client.close()
        if self.results is not self.client:
            self.results.close()


def _translate_public(cls: type) -> None:
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and callable(value) and not isinstance(value, type):
            setattr(cls, name, _translating(value))


_translate_public(RedisBroker)
