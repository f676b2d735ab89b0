"""Settings of an App, validated by pydantic. Environment variables ``FASTQ_<NAME>`` override defaults."""
from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SERIALIZERS = ("msgpack", "json", "pickle")
LIST_SETTINGS = ("accept_content", "include", "alert_webhooks", "alert_callbacks")  # env: a,b,c


class Settings(BaseModel):
    """All knobs of an App. Unknown keys are rejected so that a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    broker_url: str | None = None
    result_backend: str | None = None  # None = the broker's Redis
    result_expires: float = Field(86400.0, gt=0, description="seconds a result is kept")
    workflow_ttl: float = Field(7 * 86400.0, gt=0,
                                description="seconds a running workflow graph is kept at most")
    workflow_sweep_s: float = Field(1.0, gt=0, description="how often a supervisor looks for "
                                    "workflow nodes left unsent by a worker that died")
    include: list[str] = []  # modules a worker (and beat) imports at start: where the tasks are
    concurrency: int | None = Field(None, ge=1, description="worker children; None = the cores")
    max_tasks_per_child: int = Field(0, ge=0, description="a child that ran this many tasks is "
                                     "replaced by a fresh one (0 = never)")
    max_memory_per_child: int = Field(0, ge=0, description="KiB of resident memory after which a "
                                      "child is replaced once its task is done (0 = never)")
    task_events: bool = Field(False, description="workers publish task and worker events "
                              "(fastq events, the dashboard, Celery's format for Flower): -E")
    events_maxlen: int = Field(100_000, ge=100, description="events kept in fastq's event stream")
    default_queue: str = "default"
    default_priority: int = Field(2, ge=0, le=4)
    serializer: str = "msgpack"
    accept_content: list[str] = ["msgpack", "json"]
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="larger messages are refused at send")
    compress_threshold: int = Field(16384, ge=0, description="lz4 bodies above this many bytes; 0 = never")
    prefetch: int = Field(100, ge=1, description="messages a child fetches per stream and round")
    block_ms: int = Field(1000, ge=1, le=20_000, description="longest a child blocks in one fetch")
    flush_ms: float = Field(20.0, ge=0, description="a busy child writes results and acks at least this often")
    priority_weights: tuple[float, float, float, float, float] = (16.0, 8.0, 4.0, 2.0, 1.0)
    priority_ageing_ms: float = Field(5000.0, ge=0, description="head age that doubles a level's weight")
    async_concurrency: int = Field(100, ge=1)
    heartbeat_s: float = Field(2.0, gt=0)
    lease_ms: int = Field(30_000, ge=100, description="an unacked message idle this long is reclaimed "
                          "(Celery's visibility_timeout); live workers renew their leases")
    reclaim_interval_s: float = Field(5.0, gt=0, description="how often a child looks for expired leases")
    max_deliveries: int = Field(5, ge=1, description="deliveries after which a message is poison (DLQ)")
    release_after_ms: int = Field(1000, ge=0, description="a task running this long has the child's "
                                  "prefetched, unstarted messages handed back to the queue")
    stall_s: float = Field(60.0, gt=0, description="an idle child whose fetch loop is quiet this long "
                           "is restarted (watchdog)")
    revocation_sync_ms: int = Field(100, ge=1)
    revoke_expires: float = Field(86400.0, gt=0, description="seconds a revocation is remembered")
    queue_rate_limits: dict[str, str | float] = {}
    rate_burst_s: float = Field(0.1, ge=0, description="token bucket size, in seconds of the rate")
    delayed_tick_ms: int = Field(20, ge=1, description="how often a supervisor moves due delayed messages")
    # -- periodic tasks (fastq/beat.py, docs/beat.md) --
    beat_schedule: dict = {}  # Celery's format; values may hold crontab/schedule objects
    timezone: str = "UTC"  # IANA zone of crontab entries that name none
    beat_missed: Literal["skip", "once", "all"] = "skip"  # fires missed while no beat ran
    beat_lease_s: float = Field(5.0, gt=0, description="leader lease of a beat; renewed every third")
    # -- alerts (fastq/alerts/, docs/alerts.md); none are sent while no target is set --
    alert_webhooks: list[str] = []  # http(s) URLs that get each alert as a JSON POST
    alert_callbacks: list[str] = []  # "module:function" (or module.function) called with each Alert
    alert_check_s: float = Field(30.0, gt=0, description="how often a supervisor checks queues and "
                                 "DLQs, and a child reports its task failures (aggregated)")
    alert_queue_age_s: float = Field(0.0, ge=0, description="alert when a queue's oldest waiting "
                                     "message is older than this (0 = never)")
    alert_dlq_growth: int = Field(1, ge=0, description="alert when this many dead letters or more "
                                  "arrived in one check interval (0 = never)")
    alert_repeat_s: float = Field(300.0, gt=0, description="the same condition alerts at most "
                                  "once per this many seconds, across all workers")
    alert_timeout_s: float = Field(5.0, gt=0, description="timeout of one webhook request")
    alert_retries: int = Field(3, ge=0, description="attempts after the first one of a webhook "
                               "that failed (exponential back-off from 0.5 s)")
    # -- the REST API and dashboard (fastq/web/, docs/web.md) --
    web_token: str | None = Field(None, min_length=16, description="bearer token the web API's "
                                  "write endpoints require; None = writes are refused unless "
                                  "web_open_writes")
    web_open_writes: bool = Field(False, description="with no web_token, accept writes from "
                                  "anyone who reaches the port (only behind your own auth proxy)")
    web_read_token: str | None = Field(None, min_length=16, description="bearer token the read "
                                       "endpoints, the live stream and /metrics require (the "
                                       "write token is accepted too); None = reads are open")
    web_max_body: int = Field(1024 * 1024, ge=1024, description="largest request body in bytes "
                              "the web API accepts (larger: 413, nothing sent)")

    @model_validator(mode="before")
    @classmethod
    def _celery_aliases(cls, values: dict) -> dict:
        """Celery's ``visibility_timeout`` (seconds) is fastq's ``lease_ms``."""
        if isinstance(values, dict) and "visibility_timeout" in values:
            values = dict(values)
            values.setdefault("lease_ms", int(float(values.pop("visibility_timeout")) * 1000))
        return values

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as 'Europe/Berlin'") from None
        return v

    @field_validator("alert_webhooks")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        v = [u.strip() for u in v if u.strip()]
        bad = [u for u in v if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"alert_webhooks must be http:// or https:// URLs, not {bad}")
        return v

    @field_validator("alert_callbacks")
    @classmethod
    def _dotted_paths(cls, v: list[str]) -> list[str]:
        v = [p.strip() for p in v if p.strip()]
        bad = [p for p in v if not all(part.isidentifier()
                                       for part in p.replace(":", ".").split("."))]
        if bad:
            raise ValueError(f"alert_callbacks must be dotted paths such as 'proj.alerts:notify', "
                             f"not {bad}")
        return v

    @field_validator("serializer")
    @classmethod
    def _known_serializer(cls, v: str) -> str:
        if v not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {SERIALIZERS}, not {v!r}")
        return v

    @field_validator("accept_content")
    @classmethod
    def _known_content(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in SERIALIZERS]
        if bad:
            raise ValueError(f"unknown content types {bad}; known: {SERIALIZERS}")
        return v

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Defaults, then ``FASTQ_*`` environment variables, then explicit ``overrides``."""
        values: dict = {}
        for name in cls.model_fields:
            env = os.environ.get(f"FASTQ_{name.upper()}")
            if env is not None:
                values[name] = env.split(",") if name in LIST_SETTINGS else env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
