"""What fastq needs from a broker, as three Protocols: every method any module calls is named here.

- :class:`Transport` moves messages: send, delay, fetch, acknowledge (``finish``), leases;
- :class:`ResultStore` keeps outcomes: terminal records, non-terminal states;
- :class:`Control` is everything else workers and tools share: revocations, uniqueness, priorities,
  rate buckets, heartbeats and health records, dead letters, beat leadership.

:class:`Broker` is all three. Two implementations share one code path: ``RedisBroker`` on a Redis
server, and ``MemoryBroker`` (``memory://``), the same class over fakeredis in this process.
``tests/test_broker_contract.py`` checks that each implements every method with a compatible
signature. Transport failures surface as :class:`fastq.errors.BrokerUnavailable` (retry later),
and commands the server refuses as invalid as :class:`fastq.errors.BrokerRefused` (retrying will
not help), never as a client library's exception.

A *delivery* is the tuple ``(stream_key, level, entry_id, data)``: where it came from (to ack it),
its priority level, and the envelope bytes (``None`` when the entry was deleted while pending).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastq.errors import BrokerRefused

Delivery = tuple[str, int, bytes, bytes | None]
SendItem = tuple[str, int, bytes, int]  # (queue, level, envelope, due ms; 0 = now)
# A graph advanced: (graph id, [nodes left without an outcome, (node id, kind, spec, values...)...])
GraphStep = tuple[str, list]


@dataclass(slots=True)
class Release:
    """What advancing graphs made ready to send: nodes (queue, level, due ms, envelope, dedup
    id, graph id), FAILURE/REVOKED records of nodes failed upstream, the nodes to clear from each graph's
    outbox, and the graphs that finished (off the running list)."""

    sends: list[tuple[str, int, int, bytes, str, str]]
    failures: list[tuple[str, bytes]]
    sent: list[tuple[str, list[str]]]
    finished: list[str]
    marker_ttl_ms: int
    result_ttl_ms: int

    def extend(self, other: Release) -> None:
        self.sends += other.sends
        self.failures += other.failures
        self.sent += other.sent
        self.finished += other.finished


@dataclass(slots=True)
class Finish:
    """Everything a child owes the broker after running some deliveries, written in one round trip.

    The broker acknowledges an entry only once every write of the round succeeded (results, states,
    retries, dead letters): a refused write leaves the entries pending, to be written again.
    """

    results: list[tuple[str, bytes]] = field(default_factory=list)  # (task_id, record)
    states: list[tuple[str, bytes]] = field(default_factory=list)  # (task_id, non-terminal record)
    delayed: list[tuple[str, int, int, bytes]] = field(default_factory=list)  # (queue, level, due_ms, data)
    dead: list[tuple[str, dict[str, bytes | str]]] = field(default_factory=list)  # (queue, fields)
    releases: list[tuple[str, str]] = field(default_factory=list)  # (unique key, owner task id)
    acks: dict[str, list[bytes]] = field(default_factory=dict)  # stream_key -> entry ids
    overwrite: set[str] = field(default_factory=set)  # task ids whose result replaces an older one
    # workflow nodes that reached an outcome: (graph id, node id, 's' | 'f', result record)
    nodes: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    # workflow nodes run in the batch of their predecessor, never sent: (queue, graph, node, marker
    # TTL ms), marked sent so nothing sends them (fastq/workflows/handoff.py)
    ran_here: list[tuple[str, str, str, int]] = field(default_factory=list)
    # entries for fastq's event stream, written in the round's transaction: (fields, max length)
    events: list[tuple[dict[str, bytes | str | int | float], int]] = field(default_factory=list)

    def ack(self, stream_key: str, entry_id: bytes | None) -> None:
        if entry_id is None:  # run in its predecessor's batch: no entry of its own
            return
        ids = self.acks.get(stream_key)
        if ids is None:
            self.acks[stream_key] = [entry_id]
        else:
            ids.append(entry_id)

    def __bool__(self) -> bool:
        return bool(self.results or self.states or self.delayed or self.dead or self.releases
                    or self.acks or self.nodes or self.ran_here)


@dataclass(slots=True)
class StreamStats:
    queue: str
    level: int
    depth: int  # entries in the stream (ready + pending)
    pending: int  # delivered, not yet acknowledged
    oldest_age_ms: int  # age of the oldest entry (0 when empty)
    added: int = 0  # entries ever added to the stream (XINFO's entries-added): rates derive from it


@dataclass(slots=True)
class ConsumerStats:
    name: str  # the consumer (a worker child: ``worker:slot``)
    pending: int  # entries it holds, all levels of the queue
    idle_ms: int  # since the server last saw it read or claim


class Transport(Protocol):
    """Messages in and out of the queues."""

    url: str

    def send(self, queue: str, level: int, data: bytes) -> None:
        """Append one envelope to the ready stream of ``queue`` at ``level``."""

    def send_many(self, items: Iterable[tuple[str, int, bytes, int]], atomic: bool = False) -> None:
        """Send (queue, level, data, due_ms) items in one round trip; due_ms 0 = now. ``atomic``:
        all or none, in one call."""

    def send_delayed(self, queue: str, level: int, data: bytes, due_ms: int) -> None:
        """Keep the message in the queue's delayed set until ``due_ms`` (epoch ms)."""

    def promote(self, queue: str, now_ms: int, limit: int = 1000) -> tuple[int, int | None]:
        """Move due delayed messages to the streams: (moved, next due ms or None)."""

    def prepare(self, queues: Iterable[str]) -> None:
        """Create what consuming ``queues`` needs (consumer groups) and register the queues."""

    def fetch(self, consumer: str, queues: list[str], count: int, block_ms: int,
              own_pending: bool = False, counts: list[int] | None = None,
              release: Release | None = None) -> list[Delivery]:
        """Read up to ``count`` entries per stream (or ``counts[level]`` per stream of a level),
        after sending ``release`` (ready workflow nodes) in the same round trip."""

    def finish_and_fetch(self, done: Finish, result_ttl_ms: int, consumer: str,
                         queues: list[str], count: int, counts: list[int] | None = None,
                         release: Release | None = None
                         ) -> tuple[list[GraphStep], list[Delivery]]:
        """``finish``, then ``fetch`` without blocking (``release`` sent first), in one round
        trip; raises if the outcomes were not written (what was read stays pending)."""

    def finish(self, done: Finish, result_ttl_ms: int) -> list[GraphStep]:
        """Write a round's outcomes, then acknowledge its entries (never the other way round).
        Workflow nodes among them are recorded in their graphs in the same transaction; returns
        what that made ready, per graph (empty when the round had no workflow node)."""

    def reclaim(self, consumer: str, queues: list[str], min_idle_ms: int,
                count: int) -> list[Delivery]:
        """Take over entries idle longer than ``min_idle_ms`` (their lease ran out)."""

    def delivery_counts(self, deliveries: list[Delivery]) -> list[int]:
        """How many times each entry has been delivered."""

    def still_owned(self, consumer: str, deliveries: list[Delivery]) -> list[Delivery]:
        """The deliveries still pending for ``consumer`` (not handed back meanwhile)."""

    def renew(self, consumer: str, queues: list[str]) -> int:
        """Reset the idle time of everything ``consumer`` holds (its leases)."""

    def hand_back(self, consumer: str, queues: list[str], keep: bytes = b"") -> int:
        """Return ``consumer``'s prefetched entries (all but ``keep``) to the queue."""

    def entry(self, skey: str, entry_id: bytes) -> bytes | None:
        """The envelope of one stream entry (None if it is gone)."""

    def consumers(self, queue: str) -> list[ConsumerStats]:
        """The consumers in the groups of ``queue``: entries held, time since last seen."""

    def forget_consumer(self, consumer: str, queues: list[str]) -> bool:
        """Remove ``consumer`` from the groups of ``queues`` if it holds nothing; True if removed."""

    def trim(self, queue: str) -> int:
        """Drop leftovers below everything not yet acknowledged (a safety net)."""

    def purge(self, queue: str) -> int:
        """Drop the messages waiting in ``queue``; in-flight ones finish normally."""

    def queues(self) -> list[str]:
        """Every queue ever sent to or consumed."""

    def delayed_count(self, queue: str) -> int:
        """Messages of ``queue`` waiting in its delayed set (countdown, eta, retry back-off)."""

    def waiting_age_ms(self, queue: str) -> int:
        """Age of the oldest message of ``queue`` not yet delivered to any consumer, over every
        level (0 when none waits): what a queue-age alert watches; a long-running task, delivered
        and in flight, does not count."""

    def stats(self, queue: str) -> list[StreamStats]:
        """Depth, pending and oldest age per priority level of ``queue``."""

    def close(self) -> None:
        """Release connections (a broker may be used again after: it reconnects)."""

    def with_timeout(self, seconds: float) -> Broker:
        """A broker on the same servers whose commands give up after ``seconds`` (a caller that
        must not hang longer on a hung server: the beat, within its lease). May be ``self`` when
        nothing can hang (memory://)."""


class ResultStore(Protocol):
    """Task outcomes: the terminal record (one per task) and the latest non-terminal state."""

    def wait_result(self, task_id: str, timeout: float | None) -> bytes | None:
        """Block until the terminal record exists (None after ``timeout`` seconds)."""

    def peek_result(self, task_id: str) -> bytes | None:
        """The terminal record, without waiting."""

    def peek_results(self, task_ids: Sequence[str]) -> list[bytes | None]:
        """The terminal records of many tasks, in order (None where there is none), pipelined."""

    def broadcast(self, command_id: str, data: bytes) -> None:
        """Announce a remote-control command to every worker (fastq/worker/remote.py)."""
        raise NotImplementedError

    def control_cursor(self) -> str:
        """Where a worker starting now follows the commands from (only later ones reach it)."""
        raise NotImplementedError

    def commands_since(self, cursor: str) -> tuple[str, list[tuple[str, bytes]]]:
        """The commands announced after ``cursor``: (new cursor, [(command id, data)])."""
        raise NotImplementedError

    def reply(self, command_id: str, data: bytes, ttl_ms: int) -> None:
        """One worker's reply to a command."""
        raise NotImplementedError

    def replies(self, command_id: str, timeout: float, limit: int | None) -> list[bytes]:
        """The replies to a command arriving within ``timeout`` s (fewer once ``limit`` came)."""
        raise NotImplementedError

    def set_state(self, task_id: str, record: bytes, ttl_ms: int) -> None:
        """Write a non-terminal state record now (``update_state``, STARTED), not with the round's
        outcomes: it is read while the task still runs."""
        raise NotImplementedError

    def peek_state(self, task_id: str) -> bytes | None:
        """The latest non-terminal state record (RETRY, STARTED ...)."""

    def forget_result(self, task_id: str) -> None:
        """Drop the terminal record and the state."""

    def forget_results(self, task_ids: Iterable[str]) -> None:
        """Drop the terminal records and states of many tasks, in one round trip."""


class Control(Protocol):
    """What workers, producers and tools share besides messages and results."""

    def revoke(self, task_ids: list[str], terminate: bool, ttl_s: float) -> None: ...

    def live_revocations(self) -> tuple[dict[str, float], str]:
        """Every revocation still in force, and the cursor to follow new ones from."""

    def revocations_since(self, cursor: str) -> tuple[str, list[tuple[str, float, bool]]]:
        """New revocations after ``cursor``: (new cursor, [(task id, until, terminate)])."""

    def claim_unique(self, key: str, task_id: str, ttl_ms: int) -> str | None:
        """Take a uniqueness key for ``task_id``; None if taken, else the holder's task id."""

    def release_unique(self, key: str, task_id: str) -> None:
        """Give a uniqueness key back, if ``task_id`` still holds it."""

    def publish_events(self, entry: dict[str, Any] | None, maxlen: int,
                       celery_message: bytes | None, routing_key: str) -> int:
        """A batch of events on fastq's stream and, when given, in Celery's format on Celery's
        channel; how many listened there."""

    def events_since(self, cursor: str, block_ms: int | None, count: int = 1000,
                     ) -> tuple[str, list[dict[bytes, bytes]]]:
        """(new cursor, entries' fields) of fastq's event stream after ``cursor``."""

    def celery_mailbox(self) -> Any:
        """A pub/sub subscription to Celery's remote-control broadcasts."""

    def celery_reply(self, exchange: str, routing_key: str, message: bytes) -> int:
        """Deliver a remote-control reply to the kombu queues bound with ``routing_key``."""

    def hold_role(self, role: str, holder: str, ttl_ms: int) -> bool:
        """Take (or renew) a role one process plays at a time; True when ``holder`` has it."""

    def set_priority(self, queue: str, task_id: str, level: int) -> bool:
        """Move a task still waiting in ``queue`` to ``level``; False if it is not waiting."""

    def take_tokens(self, key: str, rate_per_s: float, n: int, capacity: float,
                    now_ms: int | None = None) -> tuple[int, int]:
        """Token bucket: take up to ``n`` tokens; (granted, ms until the next token)."""

    def heartbeat(self, consumer: str, info: bytes, ttl_ms: int) -> None: ...

    def workers(self) -> list[bytes]: ...

    def report_health(self, worker_name: str, info: bytes, ttl_ms: int) -> None: ...

    def health_reports(self) -> list[bytes]: ...

    def dead_letters(self, queue: str, count: int | None = 100, start: str = "-",
                     end: str = "+") -> list[tuple[bytes, dict]]:
        """Dead letters of ``queue`` between entry ids ``start`` and ``end`` (a leading ``(``
        excludes the bound), oldest first: [(entry id, {field: value})]."""

    def dead_letter_count(self, queue: str) -> int: ...

    def claim_alert(self, alert_key: str, ttl_ms: int) -> bool:
        """Take the right to send the alert ``alert_key`` for ``ttl_ms`` (SET NX PX): True for
        the one caller that should send it, False while someone sent it already."""

    def requeue_dead(self, entries: Sequence[tuple[str, str, int]]
                     ) -> list[str | None | BrokerRefused]:
        """Move dead letters (queue, entry id, level) back to their ready streams, atomically
        each, in one round trip. Per entry: the new entry id, None if gone, or why refused."""

    def delete_dead(self, queue: str, entry_ids: Sequence[str]) -> int:
        """Delete these dead letters of ``queue``; how many existed."""

    def purge_dead(self, queue: str) -> int:
        """Delete every dead letter of ``queue``; how many there were."""

    # The beat (fastq/beat.py): a leader lease, and fires that send and record an instant at once.
    def beat_acquire(self, beat_id: str, lease_ms: int, now_ms: int) -> tuple[bool, int | None]:
        """Take or keep the leader lease: (True, when a leader was last alive, ms, or None) if
        ``beat_id`` leads now, else (False, ms left on the holder's lease)."""

    def beat_renew(self, beat_id: str, lease_ms: int, now_ms: int) -> bool:
        """Extend the lease if ``beat_id`` still holds it; False if it lost it."""

    def beat_release(self, beat_id: str, now_ms: int) -> bool:
        """Give the lease up if ``beat_id`` holds it; True if it did."""

    def beat_fire(self, beat_id: str, entry: str, fire_ms: int, marker_ttl_ms: int,
                  messages: Sequence[tuple[str, int, bytes, int]]) -> int:
        """Send ``messages`` (queue, level, data, due ms) as ``entry``'s fire at ``fire_ms`` and
        record it, all or nothing: 1 sent, 0 already fired, -1 ``beat_id`` is not the leader."""

    def beat_advance(self, beat_id: str, entry: str, ms: int) -> bool:
        """Record ``ms`` as handled for ``entry`` without sending; False if not the leader."""

    def beat_last_fired(self) -> dict[str, int]:
        """Entry name -> epoch ms of its last fired (or skipped) instant."""


class Graphs(Protocol):
    """Workflow graphs (fastq/workflows/): waiting nodes kept in Redis, advanced as nodes finish."""

    def graph_submit(self, dag_id: str, fields: dict[str, bytes], roots: Sequence[SendItem],
                     ttl_ms: int, watches: Sequence[str] = ()) -> None:
        """Write a graph's waiting nodes, announce the tasks outside it that it waits for
        (``watches``), then send its roots, in one transaction."""

    def watch(self, dag_id: str, task_ids: Sequence[str], ttl_ms: int) -> None:
        """Announce that graph ``dag_id`` (running already) waits for the outcome of tasks
        outside it, as ``graph_submit``'s ``watches`` do (``Task.replace`` of a node)."""

    def graph_complete(self, nodes: Sequence[tuple[str, str, str, bytes]],
                       finished_ttl_ms: int) -> list[GraphStep]:
        """Record (dag id, node id, 's' or 'f', record) outcomes outside a worker's round."""

    def live_watches(self) -> tuple[list[tuple[str, str, float]], str]:
        """Every (graph id, task id, until) wait on a task sent outside the graph, and the
        cursor of the stream announcing new ones."""

    def watches_since(self, cursor: str) -> tuple[str, list[tuple[str, str, float]]]: ...

    def watched(self, offset: int, count: int) -> list[tuple[str, str]]:
        """A page of (graph id, task id) waits still in force (the sweeper's list)."""

    def unwatch(self, pairs: Sequence[tuple[str, str]]) -> None: ...

    def graph_collect(self, dag_id: str, min_age_ms: int, finished_ttl_ms: int) -> GraphStep:
        """What became ready at least ``min_age_ms`` ago and was never sent (its worker died)."""

    def graph_release(self, release: Release) -> None:
        """Send the ready nodes once each (deduplicated by id), write the records of nodes
        failed upstream, clear them from their outboxes, and drop finished graphs from the
        running list, in one round trip."""

    def running_graphs(self, count: int = 1000) -> list[str]:
        """Ids of graphs that have not finished (the sweeper's list)."""

    def running_graph_count(self) -> int:
        """How many graphs are running (not yet finished)."""

    def graph_node_counts(self, graphs: int = 1000) -> tuple[int, int]:
        """(waiting, running) nodes of the first ``graphs`` running graphs: waiting, not yet
        sent because a dependency is unmet; running, sent and without an outcome."""

    def save_group(self, group_id: str, data: bytes, ttl_ms: int) -> None: ...

    def load_group(self, group_id: str) -> bytes | None: ...


class Broker(Transport, ResultStore, Control, Graphs, Protocol):
    """A whole broker: what ``fastq.broker.connect`` returns."""
