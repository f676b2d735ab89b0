"""Every Redis key fastq uses is built here, and only here (see docs/architecture.md §Keys).

Queue keys carry the queue name in a hash tag (``{Q}``) so that one queue's streams, delayed set and
dead-letter stream live in one cluster slot and Lua scripts may touch them together.
"""
from __future__ import annotations

GROUP = "fastq"
LEVELS = 5
PRIORITY_NAMES = ("critical", "high", "normal", "low", "batch")
QUEUES = "fastq:queues"  # set of queue names ever sent to (for status, purge, maintenance)


def stream(queue: str, level: int) -> str:
    """Ready messages of ``queue`` at priority ``level`` (0 = critical .. 4 = batch)."""
    return f"fastq:{{{queue}}}:p{level}"


def streams(queue: str) -> list[str]:
    return [stream(queue, level) for level in range(LEVELS)]


def parse_stream(key: str | bytes) -> tuple[str, int]:
    """Inverse of :func:`stream`: ``(queue, level)``."""
    if isinstance(key, bytes):
        key = key.decode()
    head, _, tail = key.rpartition(":p")
    return head[len("fastq:{"):-1], int(tail)


def queue_pattern(queue: str) -> str:
    """SCAN/KEYS pattern matching every key of one queue (its streams, delayed set, DLQ, rate bucket)."""
    return f"fastq:{{{queue}}}:*"


def delayed(queue: str) -> str:
    return f"fastq:{{{queue}}}:delayed"


def dlq(queue: str) -> str:
    return f"fastq:{{{queue}}}:dlq"


def result(task_id: str) -> str:
    """A list holding the task's terminal result record (see result.py for why a list)."""
    return f"fastq:r:{task_id}"


def worker(consumer: str) -> str:
    """Heartbeat of one worker child (TTL)."""
    return f"fastq:w:{consumer}"


WORKER_PATTERN = "fastq:w:*"


def health(worker_name: str) -> str:
    """Health record of one worker (its supervisor and every child slot; TTL), fastq/worker/health.py."""
    return f"fastq:h:{worker_name}"


HEALTH_PATTERN = "fastq:h:*"


def alert_sent(alert_key: str) -> str:
    """Marker (TTL ``alert_repeat_s``) that an alert was sent: one worker of many sends it
    (fastq/alerts/checks.py)."""
    return f"fastq:alert:{alert_key}"


def state(task_id: str) -> str:
    """Latest non-terminal state record (RETRY, STARTED) of a task; terminal ones are in result()."""
    return f"fastq:s:{task_id}"


REVOKED = "fastq:revoked"  # zset: task id -> epoch s until which the revocation is kept
REVOCATIONS = "fastq:revocations"  # stream of revocations, for workers to follow
CONTROL = "fastq:control"  # stream of remote-control commands (inspect, ping ...) to workers


def control_reply(command_id: str) -> str:
    """The list the workers push their replies to one remote-control command to (TTL)."""
    return f"fastq:control:reply:{command_id}"


def unique(key: str) -> str:
    """Holds the id of the queued-or-running task that owns this uniqueness key."""
    return f"fastq:unique:{key}"


def rate_task(task_name: str) -> str:
    """Token bucket (hash: tokens, ts) shared by every worker for one task's global rate limit."""
    return f"fastq:rate:task:{task_name}"


def rate_queue(queue: str) -> str:
    """Token bucket (hash: tokens, ts) for a whole queue's global rate limit."""
    return f"fastq:{{{queue}}}:rate"


def role(name: str) -> str:
    """String with TTL: who plays a one-at-a-time role (``hold_role``), e.g. ``metrics``."""
    return f"fastq:role:{name}"


# -- beat (fastq/beat.py): at most one beat fires, and each instant of an entry at most once --
BEAT_LEADER = "fastq:beat:leader"  # string with TTL: id of the beat holding the leader lease
BEAT_LAST = "fastq:beat:last"  # hash: entry name -> epoch ms of its last fired (or skipped) instant
BEAT_SEEN = "fastq:beat:seen"  # string: epoch ms a leader was last alive (tells handover from downtime)


def beat_fired(entry: str, fire_ms: int) -> str:
    """Dedup marker (TTL) of one fire instant of one beat entry; set in the same script as the send."""
    return f"fastq:beat:fired:{entry}:{fire_ms}"


# -- workflows (fastq/workflows/): one graph's keys share its id as hash tag (one cluster slot) --
def graph(dag_id: str) -> str:
    """Hash of one workflow graph: each waiting node's spec, parents, dependents, unmet count
    and outcome (fastq/broker/lua/dag_complete.lua lists the fields)."""
    return f"fastq:dag:{{{dag_id}}}"


def graph_outbox(dag_id: str) -> str:
    """Hash node id -> ms: nodes made ready (or failed by an upstream failure) not yet sent."""
    return f"fastq:dag:{{{dag_id}}}:out"


GRAPHS = "fastq:dags"  # zset: running graph id -> epoch ms of its safety deadline (the sweeper's list)
# depends_on: a graph waiting on tasks sent outside it ("dag_id task_id" -> epoch s of its deadline)
WATCHED = "fastq:watched"
WATCHES = "fastq:watches"  # stream of new watches, for workers to follow


def node_sent(queue: str, dag_id: str, node_id: str) -> str:
    """Marker (TTL) that a node of graph ``dag_id`` was sent to ``queue``: the dedup key of its
    release (per graph: a task replaced by a canvas lends its id to the canvas's last node)."""
    return f"fastq:{{{queue}}}:sent:{dag_id}:{node_id}"


def group_meta(group_id: str) -> str:
    """The member ids of a saved GroupResult (TTL)."""
    return f"fastq:g:{group_id}"


# -- events (fastq/events/): fastq's own capped stream, and Celery's channels on the same Redis
EVENTS = "fastq:events"  # capped stream of task and worker events (field "e": a JSON list of them)
KOMBU_BINDINGS = "_kombu.binding.%s"  # kombu's set of an exchange's bindings: key, pattern, queue


def celery_event_channel(db: int, routing_key: str) -> str:
    """The pub/sub channel Celery's Redis transport fans an event out on (``task.succeeded``)."""
    return f"/{db}.celeryev/{routing_key}"


def celery_pidbox_channel(db: int) -> str:
    """The pub/sub channel of Celery's remote-control broadcasts (``app.control``, Flower)."""
    return f"/{db}.celery.pidbox"


# -- moving Celery's queued messages over (fastq/migrate.py); keys in the *Celery* broker's Redis
KOMBU_PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: "<queue>\x06\x16<priority>" lists
KOMBU_UNACKED = "unacked"  # kombu's hash: delivery tag -> [message, exchange, routing key]
KOMBU_UNACKED_INDEX = "unacked_index"  # kombu's sorted set of those delivery tags


def kombu_queue_lists(queue: str) -> list[str]:
    """The lists kombu keeps one queue's messages in: the queue itself (priority 0) and one per
    other priority step."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in range(1, 10))]


def celery_migrating() -> str:
    """A message taken from a kombu list, held while it is converted and sent to fastq."""
    return "fastq:celery-migrate:in-flight"


def celery_unmigrated(queue: str) -> str:
    """Messages of ``queue`` that could not be converted (kept, with nothing lost)."""
    return f"fastq:celery-migrate:unmigrated:{queue}"


# -- throughput gates (fastq/broker/ceiling.py): the raw Redis ceiling measured beside fastq --
CEILING = "fastq:ceiling"  # stream the ceiling's plain XADD / XREADGROUP / XACK run on (deleted after)
CEILING_REPLY = "fastq:ceiling:reply"  # list the ceiling's round trip replies go through
