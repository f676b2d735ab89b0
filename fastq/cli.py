"""The ``fastq`` command line: worker, status, purge, demo.

Both ``fastq -A proj worker`` and ``fastq worker -A proj`` work, and Celery's common worker flags
are accepted.
"""
from __future__ import annotations

import os
import sys
import time

import click

from fastq import keys, log


def _app_option(f):
    return click.option("-A", "--app", "app_spec", help="Module with the App, e.g. proj or proj:app")(f)


def _resolve_app(ctx: click.Context, app_spec: str | None):
    from fastq.loader import load_app

    obj = ctx.find_root().obj or {}
    if obj.get("app") is not None and not app_spec:  # app.start(): the app itself
        return obj["app"]
    spec = app_spec or obj.get("app_spec")
    if not spec:
        from fastq.app import App

        return App()
    try:
        return load_app(spec)
    except (LookupError, ImportError) as exc:
        raise click.UsageError(f"cannot load app {spec!r}: {exc}") from exc


@click.group()
@_app_option
@click.option("-b", "--broker", help="Broker URL (overrides FASTQ_BROKER_URL)")
@click.pass_context
def main(ctx: click.Context, app_spec: str | None, broker: str | None) -> None:
    """fastq: a fast, crash-safe task queue on Redis Streams."""
    ctx.obj = {**(ctx.obj or {}), "app_spec": app_spec}
    if broker:
        os.environ["FASTQ_BROKER_URL"] = broker


@main.command()
@_app_option
@click.option("-c", "--concurrency", type=int, default=None, help="Child processes (default: cores)")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: the app's)")
@click.option("--prefetch", type=int, default=None, help="Messages fetched per stream and round")
@click.option("--prefetch-multiplier", type=int, default=None, hidden=True)
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.option("-n", "--hostname", "name", default=None, help="Worker name (stable across restarts)")
@click.option("-P", "--pool", default=None, hidden=True)
@click.option("-E", "--task-events", is_flag=True,
              help="Publish task and worker events (fastq events, Flower): docs/events.md")
@click.option("-O", "optimization", default=None, hidden=True)
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.option("--without-heartbeat", is_flag=True, hidden=True)
@click.option("--max-tasks-per-child", type=int, default=None,
              help="Replace a child after it ran this many tasks")
@click.option("--max-memory-per-child", type=int, default=None,
              help="Replace a child once its resident memory exceeds this many KiB")
@click.option("-X", "--exclude-queues", default=None, help="Comma-separated queues not to consume")
@click.option("--autoscale", default=None, help="MAX,MIN: fastq runs MAX children (see docs)")
@click.option("--pidfile", default=None, help="Write the supervisor's pid here (removed at exit)")
@click.option("-f", "--logfile", default=None, help="Log to this file instead of stderr")
@click.option("-D", "--detach", is_flag=True, help="Run in the background (with --logfile)")
@click.option("-B", "--beat", "embed_beat", is_flag=True,
              help="Also run a beat (periodic tasks) in a process of its own")
@click.option("--log-format", type=click.Choice(log.FORMATS), default=None,
              help="console (default) or json; also FASTQ_LOG_FORMAT")
@click.option("--log-tasks", is_flag=True, help="Log one info line per task run")
@click.option("--metrics-port", type=int, default=None, envvar="FASTQ_METRICS_PORT",
              help="Serve Prometheus metrics on this port (docs/metrics.md)")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,  # noqa: S104
              help="Address to serve the metrics on")
@click.option("--flower-metrics", is_flag=True, help="Also record Flower's metric names")
@click.pass_context
def worker(ctx, app_spec, concurrency, queues, prefetch, prefetch_multiplier, loglevel, name, pool,
           task_events, optimization, without_gossip, without_mingle, without_heartbeat,
           max_tasks_per_child, max_memory_per_child, exclude_queues, autoscale, pidfile, logfile,
           detach, embed_beat, log_format, log_tasks, metrics_port, metrics_host, flower_metrics):
    """Start a worker: a supervisor and N child processes."""
    from fastq.worker.supervisor import Supervisor

    if detach:
        _detach()
    if logfile:
        _log_to(logfile)
    if metrics_port:
        from fastq.metrics import server as metrics_server

        metrics_server.prepare()  # before the app (or anything) imports prometheus_client
    if autoscale:
        most = int(autoscale.split(",")[0])
        concurrency = concurrency or most
        click.echo(f"note: --autoscale {autoscale}: fastq runs {concurrency} children all the "
                   "time (an idle child costs one blocked read)", err=True)
    if log_format:
        os.environ["FASTQ_LOG_FORMAT"] = log_format  # for this process and what it forks
    log.configure(loglevel)
    app = _resolve_app(ctx, app_spec)
    app.import_modules()
    app.setup_logging(loglevel, logfile)
    if log_tasks:
        app.add_middleware(log.TaskLog())
    if task_events:
        app.settings.task_events = True
    if app.settings.task_events:
        from fastq.events.publisher import TaskEvents, WorkerEvents

        app.add_middleware(TaskEvents(app))
        app.add_middleware(WorkerEvents(app))
    if metrics_port:
        from fastq.metrics import TaskMetrics

        app.add_middleware(TaskMetrics(flower=flower_metrics))
        app.add_middleware(metrics_server.Exporter(metrics_port, metrics_host, flower_metrics))
    prefetch = prefetch or prefetch_multiplier
    if prefetch:
        app.settings.prefetch = prefetch
    if max_tasks_per_child is not None:
        app.settings.max_tasks_per_child = max_tasks_per_child
    if max_memory_per_child is not None:
        app.settings.max_memory_per_child = max_memory_per_child
    if pool and pool not in ("prefork", "processes"):
        click.echo(f"note: --pool {pool} ignored; fastq children are processes with an event loop "
                   "for async tasks", err=True)
    excluded = set((exclude_queues or "").split(","))
    qs = [q for q in (queues or app.settings.default_queue).split(",") if q and q not in excluded]
    if not qs:
        raise click.UsageError("no queue left to consume (-Q minus -X is empty)")
    try:
        sup = Supervisor(app, concurrency or app.settings.concurrency or os.cpu_count() or 1, qs,
                         name=name)
    except ValueError as exc:  # settings the worker could not apply, e.g. an alert callback
        raise click.UsageError(str(exc)) from exc
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    beat_pid = _fork_beat(app, bool(metrics_port)) if embed_beat else None
    try:
        code = sup.run()
    finally:
        if beat_pid is not None:
            _stop_beat(beat_pid)
        if pidfile and os.getpid() == sup.pid:
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
    sys.exit(code)


def _detach() -> None:
    """Celery's ``--detach``: go on in a process of its own session; the command returns."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def _log_to(path: str) -> None:
    """Send this process's (and its children's) stderr, where the logs go, to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


@main.command()
@_app_option
@click.pass_context
def status(ctx, app_spec):
    """Queues x priorities (depth, pending, oldest age) and live workers."""
    from fastq.worker.health import live_workers

    app = _resolve_app(ctx, app_spec)
    broker = app.broker
    click.echo(f"broker {app.conf.broker_url}")
    click.echo(f"{'queue':<20} {'priority':<9} {'depth':>9} {'pending':>9} {'oldest':>10}")
    for queue in broker.queues():
        for st in broker.stats(queue):
            if st.depth or st.pending:
                click.echo(f"{queue:<20} {keys.PRIORITY_NAMES[st.level]:<9} {st.depth:>9} "
                           f"{st.pending:>9} {st.oldest_age_ms / 1000:>9.1f}s")
    # A child's heartbeat comes from its fetch loop, so a child busy with a long task stops
    # writing it; its supervisor's health record still shows it (busy, with which task).
    records, orphans = live_workers(broker)
    children = sum(len(rec["children"]) for rec in records) + len(orphans)
    click.echo(f"\n{len(records)} live workers, {children} live worker children")
    for rec in records:
        busy = sum(c["busy"] for c in rec["children"])
        click.echo(f"  {rec['worker']} (pid {rec['pid']} on {rec['host']}): {busy} of "
                   f"{len(rec['children'])} children busy, watchdog restarts "
                   f"{rec['watchdog_restarts']}")
        for child in rec["children"]:
            doing = (f"busy {child['busy_s']:.1f}s with {child['task_id']}" if child["busy"]
                     else "idle")
            beat = child["beat"]
            counts = f"processed {beat['processed']:<10} failed {beat['failed']:<8}" if beat else ""
            click.echo(f"    {child['consumer']:<40} {counts} {doing}")
    for w in orphans:  # consumers without a supervisor
        age = time.time() - w["at"]
        click.echo(f"  {w['consumer']:<40} pid {w['pid']:<8} processed {w['processed']:<10} "
                   f"failed {w['failed']:<8} seen {age:.1f}s ago  queues {','.join(w['queues'])}")


@main.command()
@_app_option
@click.option("-w", "--worker", "worker_name", default=None, help="Check only this worker (-n name)")
@click.option("--json", "as_json", is_flag=True, help="Print the health records as JSON")
@click.pass_context
def health(ctx, app_spec, worker_name, as_json):
    """Exit 0 when every live worker (or the named one) is consuming; 1 when a child's fetch loop
    has gone quiet; 2 when there is no such live worker. For liveness probes and monitors."""
    import msgpack
    import orjson

    from fastq.worker.health import problems

    app = _resolve_app(ctx, app_spec)
    records = [rec for rec in map(msgpack.unpackb, app.broker.health_reports())
               if not rec.get("stopped")]  # the last record of a worker that stopped warm
    if worker_name is not None:
        records = [rec for rec in records if rec["worker"] == worker_name]
    if as_json:
        click.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
    if not records:
        click.echo(f"no live worker{' named ' + worker_name if worker_name else ''}", err=True)
        sys.exit(2)
    bad = 0
    for rec in sorted(records, key=lambda rec: rec["worker"]):
        found = problems(rec)
        bad += bool(found)
        if not as_json:
            busy = sum(c["busy"] for c in rec["children"])
            restarts = rec["watchdog_restarts"]
            last = (f", last {time.time() - rec['last_watchdog_at']:.0f} s ago"
                    if rec["last_watchdog_at"] else "")
            click.echo(f"{rec['worker']}: {'UNHEALTHY' if found else 'ok'} "
                       f"({len(rec['children'])} children, {busy} busy; "
                       f"watchdog restarts {restarts}{last})")
            for problem in found:
                click.echo(f"  {problem}")
    sys.exit(1 if bad else 0)


@main.command()
@_app_option
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: all known)")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation")
@click.pass_context
def purge(ctx, app_spec, queues, force):
    """Drop all waiting messages of the queues (running ones finish)."""
    app = _resolve_app(ctx, app_spec)
    qs = queues.split(",") if queues else app.broker.queues()
    if not force:
        click.confirm(f"Drop all waiting messages in {', '.join(qs)}?", abort=True)
    total = sum(app.broker.purge(q) for q in qs)
    click.echo(f"purged {total} messages from {len(qs)} queue(s)")


@main.command()
@click.option("-n", "--tasks", "count", type=int, default=200_000, show_default=True)
@click.option("-c", "--concurrency", type=int, default=None, help="Worker children (default: cores)")
@click.option("--fail-ratio", type=float, default=0.01, show_default=True)
def demo(count, concurrency, fail_ratio):
    """Run a worker and a real mixed workload on the embedded default, then report."""
    from fastq.demo import run_demo

    log.configure("warning")
    sys.exit(run_demo(count, concurrency or os.cpu_count() or 1, fail_ratio))


# -- dead letters (fastq/dlq.py) ----------------------------------------------------------------
def _dead_letters(ctx: click.Context, app_spec: str | None):
    from fastq.dlq import DeadLetters

    return DeadLetters(_resolve_app(ctx, app_spec))


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _check_one_selection(ids: tuple[str, ...], task: str | None, all_: bool) -> None:
    if sum((bool(ids), task is not None, all_)) != 1:
        raise click.UsageError("give dead-letter ids (entry or task ids), or --task NAME, or --all")


@main.group()
@_app_option
@click.pass_context
def dlq(ctx, app_spec):
    """Dead letters: messages workers could not run (list, show, requeue, purge)."""
    log.configure("error")  # the commands report refusals themselves, on stderr
    if app_spec:
        ctx.obj = {**(ctx.obj or {}), "app_spec": app_spec}


@dlq.command("list")
@_app_option
@click.option("-Q", "--queue", default=None, help="Only this queue (default: all known)")
@click.option("--task", default=None, help="Only dead letters of this task name")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many")
@click.pass_context
def dlq_list(ctx, app_spec, queue, task, limit):
    """Dead letters, oldest first: entry id, queue, time, task, task id, reason."""
    dead = _dead_letters(ctx, app_spec)
    letters = dead.list(queue=queue, task=task, limit=limit)
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(f"{'entry':<16} {'queue':<14} {'failed at (UTC)':<19} {'tries':>5} {'task':<32} "
               f"{'task id':<36} reason")
    for dl in letters:
        click.echo(f"{dl.dlq_entry_id:<16} {dl.queue:<14} {_when(dl.failed_at):<19} "
                   f"{dl.attempts:>5} {dl.task or '-':<32} {dl.task_id or '-':<36} {dl.reason}")
    total = dead.count(queue)
    more = f" (of {total}; see --limit)" if total > len(letters) and task is None else ""
    click.echo(f"{len(letters)} dead letter(s){more}")


@dlq.command("show")
@_app_option
@click.argument("ident")
@click.option("-Q", "--queue", default=None, help="Only this queue (default: all known)")
@click.pass_context
def dlq_show(ctx, app_spec, ident, queue):
    """One dead letter in full, by its entry id or its task id."""
    from fastq._core import decode_message, unpack_body

    dead = _dead_letters(ctx, app_spec)
    found = dead.find(ident, queue)
    if not found:
        click.echo(f"no dead letter {ident!r}", err=True)
        sys.exit(1)
    accept_pickle = "pickle" in dead.app.conf.accept_content
    for n, dl in enumerate(found):
        if n:
            click.echo("")
        click.echo(f"entry      {dl.dlq_entry_id}")
        click.echo(f"queue      {dl.queue}")
        click.echo(f"task       {dl.task or '-'}")
        click.echo(f"task id    {dl.task_id or '-'}")
        click.echo(f"reason     {dl.reason}")
        click.echo(f"failed at  {_when(dl.failed_at)} UTC ({dl.failed_at})")
        click.echo(f"attempts   {dl.attempts}")
        click.echo(f"consumer   {dl.consumer or '-'}")
        click.echo(f"from       {dl.stream or '-'} {dl.entry}")
        if dl.decode_error is None:
            msg = decode_message(dl.envelope)
            click.echo(f"priority   {keys.PRIORITY_NAMES[msg.priority]} ({msg.priority})")
            try:
                args, kwargs = unpack_body(msg.body, msg.codec, msg.compressed, accept_pickle)
                click.echo(f"args       {args!r}")
                click.echo(f"kwargs     {kwargs!r}")
            except Exception as exc:  # noqa: BLE001 - show what we can
                click.echo(f"body       undecodable: {exc}")
        else:
            click.echo(f"envelope   undecodable ({dl.decode_error}), {len(dl.envelope)} bytes: "
                       f"{dl.envelope[:64]!r}")
        for err in dl.errors:
            click.echo(f"error      attempt {err.get('attempt', '?')}: {err.get('type', '?')}: "
                       f"{err.get('message', '')}")
            if err.get("traceback"):
                click.echo("  " + str(err["traceback"]).rstrip().replace("\n", "\n  "))
        if dl.traceback and (not dl.errors or dl.errors[-1].get("traceback") != dl.traceback):
            click.echo("traceback")
            click.echo("  " + dl.traceback.rstrip().replace("\n", "\n  "))


def _dlq_selection(f):
    """The options that pick dead letters: IDS..., --task NAME, --all, and -Q QUEUE."""
    for option in reversed([
        click.argument("ids", nargs=-1),
        click.option("--task", default=None, help="Every dead letter of this task name"),
        click.option("--all", "all_", is_flag=True, help="Every dead letter"),
        click.option("-Q", "--queue", default=None, help="Only this queue (default: all known)"),
    ]):
        f = option(f)
    return f


@dlq.command("requeue")
@_app_option
@_dlq_selection
@click.pass_context
def dlq_requeue(ctx, app_spec, ids, task, all_, queue):
    """Send dead letters again, unchanged (same task id, arguments and priority)."""
    _check_one_selection(ids, task, all_)
    dead = _dead_letters(ctx, app_spec)
    try:
        report = dead.requeue_report(list(ids), task=task, all=all_, queue=queue)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for dl, why in report.refused:
        click.echo(f"refused {dl.dlq_entry_id} ({dl.queue}): {why}", err=True)
    for ident in report.missing:
        click.echo(f"no dead letter {ident!r}", err=True)
    click.echo(f"requeued {len(report.requeued)} dead letter(s)")
    if report.refused or report.missing:
        sys.exit(1)


@dlq.command("purge")
@_app_option
@_dlq_selection
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation")
@click.pass_context
def dlq_purge(ctx, app_spec, ids, task, all_, queue, force):
    """Delete dead letters for good."""
    _check_one_selection(ids, task, all_)
    dead = _dead_letters(ctx, app_spec)
    if not force:
        what = (", ".join(ids) if ids else f"every dead letter of task {task}" if task
                else "every dead letter")
        where = f"queue {queue}" if queue else "all queues"
        click.confirm(f"Delete {what} in {where} for good?", abort=True)
    try:
        total = dead.purge(list(ids), task=task, all=all_, queue=queue)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"purged {total} dead letter(s)")


# -- periodic tasks (fastq/beat.py) ---------------------------------------------------------------
def _check_beat_schedule(app) -> None:
    from fastq.beat import load_entries

    try:
        load_entries(app)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc


def _fork_beat(app, metrics: bool = False) -> int:
    """``worker -B``: the beat in a forked process of its own (a thread would be copied, mid-lock
    perhaps, into every child the supervisor forks). It stops with the worker, or by itself when
    the worker process is gone. With ``metrics`` its figures go into the worker's metrics files
    (fastq/metrics/beat.py)."""
    import signal

    import structlog

    from fastq.beat import Beat

    _check_beat_schedule(app)
    app.broker  # noqa: B018 - resolve (or start) the broker once, so both processes share it
    app.close()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            beat = Beat(app, parent_pid=parent)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: beat.stop())
            files = None
            if metrics:
                from fastq.metrics.beat import BeatFiles

                files = BeatFiles(beat)
                files.start()
            beat.run()
            if files is not None:
                files.stop()
            code = 0
        except BaseException:  # noqa: BLE001 - logged; the worker goes on without a beat
            structlog.get_logger("fastq.beat").exception("embedded beat crashed")
        finally:
            os._exit(code)
    return pid


def _stop_beat(pid: int, timeout: float = 10.0) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped (by the supervisor's loop)
            return
        if done:
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            return
        time.sleep(0.02)


@main.command()
@_app_option
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.option("-s", "--schedule", "schedule_file", default=None, hidden=True)  # state is in Redis
@click.option("--max-interval", type=float, default=None, hidden=True)
@click.option("--log-format", type=click.Choice(log.FORMATS), default=None,
              help="console (default) or json; also FASTQ_LOG_FORMAT")
@click.option("--metrics-port", type=int, default=None, envvar="FASTQ_BEAT_METRICS_PORT",
              help="Serve the beat's Prometheus metrics on this port (docs/metrics.md)")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,  # noqa: S104
              help="Address to serve the metrics on")
@click.pass_context
def beat(ctx, app_spec, loglevel, schedule_file, max_interval, log_format, metrics_port,
         metrics_host):
    """Send periodic tasks on schedule (Celery's beat). Run two or more for failover: one leads
    and fires, the others take over within the lease (beat_lease_s)."""
    import signal

    from fastq.beat import Beat

    if log_format:
        os.environ["FASTQ_LOG_FORMAT"] = log_format
    log.configure(loglevel)
    app = _resolve_app(ctx, app_spec)
    app.import_modules()
    app.setup_logging(loglevel)
    _check_beat_schedule(app)
    scheduler = Beat(app)
    if metrics_port:
        from fastq.metrics import beat as beat_metrics

        beat_metrics.serve(scheduler, metrics_port, metrics_host)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: scheduler.stop())
    scheduler.run()


INSPECT_COMMANDS = ("ping", "active", "reserved", "scheduled", "registered", "stats",
                    "active_queues", "revoked", "conf")


def _print_replies(replies: dict | None, as_json: bool) -> None:
    import json

    if not replies:
        click.echo("Error: No nodes replied within time constraint.", err=True)
        sys.exit(69)  # Celery's exit code (EX_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(replies, default=repr))
        return
    for worker_name, reply in sorted(replies.items()):
        click.echo(f"->  {worker_name}: OK")
        body = reply if isinstance(reply, list) else [reply]
        for item in body or ["- empty -"]:
            click.echo(f"    {json.dumps(item, default=repr) if not isinstance(item, str) else item}")
    click.echo(f"\n{len(replies)} node{'s' if len(replies) != 1 else ''} online.")


@main.command()
@_app_option
@click.argument("command", type=click.Choice(INSPECT_COMMANDS))
@click.option("-d", "--destination", default=None, help="Comma-separated worker names")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
@click.option("-j", "--json", "as_json", is_flag=True, help="Print the replies as JSON")
@click.pass_context
def inspect(ctx, app_spec, command, destination, timeout, as_json):
    """Ask the live workers (Celery's ``inspect``): ping, active, registered, stats ..."""
    app = _resolve_app(ctx, app_spec)
    dest = [d for d in destination.split(",") if d] if destination else None
    _print_replies(getattr(app.control.inspect(dest, timeout), command)(), as_json)


def _number_or_none(value: str) -> float | None:
    return None if value.lower() in ("none", "0") else float(value)


# the commands with arguments: their names (? optional) and how a value is read
CONTROL_COMMANDS = {
    "ping": ((), str), "shutdown": ((), str), "revoke": ((), str),
    "rate_limit": (("task_name", "rate_limit"), lambda v: None if v.lower() == "none" else v),
    "time_limit": (("task_name", "soft", "hard?"), _number_or_none),
    "pool_grow": (("n?",), int), "pool_shrink": (("n?",), int),
    "autoscale": (("max", "min?"), int),
    "add_consumer": (("queue",), str), "cancel_consumer": (("queue",), str),
}


@main.command()
@_app_option
@click.argument("command", type=click.Choice(tuple(CONTROL_COMMANDS)))
@click.argument("arguments", nargs=-1)
@click.option("-d", "--destination", default=None, help="Comma-separated worker names")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
@click.option("--terminate", is_flag=True, help="revoke: also stop a running task")
@click.option("-j", "--json", "as_json", is_flag=True)
@click.pass_context
def control(ctx, app_spec, command, arguments, destination, timeout, terminate, as_json):
    """Steer the live workers (Celery's ``control``): ping, shutdown, revoke ID..., rate_limit
    TASK RATE, time_limit TASK SOFT [HARD], pool_grow [N], pool_shrink [N], autoscale MAX [MIN],
    add_consumer QUEUE, cancel_consumer QUEUE."""
    app = _resolve_app(ctx, app_spec)
    dest = [d for d in destination.split(",") if d] if destination else None
    if command == "revoke":
        if not arguments:
            raise click.UsageError("revoke needs the task ids")
        app.control.revoke(list(arguments), terminate=terminate)
        click.echo(f"revoked {len(arguments)} task(s)")
    elif command == "shutdown":
        app.control.shutdown(dest)
        click.echo("shutdown sent")
    elif command == "ping":
        _print_replies(app.control.inspect(dest, timeout).ping(), as_json)
    else:
        names, convert = CONTROL_COMMANDS[command]
        if len(arguments) > len(names) or len(arguments) < sum(not n.endswith("?") for n in names):
            raise click.UsageError(f"{command} takes {' '.join(n.upper() for n in names)}")
        given = {n.rstrip("?"): v if n == "task_name" else convert(v)
                 for n, v in zip(names, arguments, strict=False)}
        replies = getattr(app.control, command)(destination=dest, reply=True, timeout=timeout,
                                                **given)
        merged: dict = {}
        for reply in replies:
            merged.update(reply)
        _print_replies(merged, as_json)


@main.command()
@_app_option
@click.argument("task_id")
@click.option("-t", "--timeout", type=float, default=None, help="Wait this long for it")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show a failure's traceback")
@click.pass_context
def result(ctx, app_spec, task_id, timeout, show_traceback):
    """Print a task's result (Celery's ``result``)."""
    app = _resolve_app(ctx, app_spec)
    res = app.AsyncResult(task_id)
    if timeout is not None or res.ready():
        value = res.get(timeout=timeout, propagate=False)
    else:
        value = None
    if res.failed() and show_traceback:
        click.echo(res.traceback)
    else:
        click.echo(repr(value) if res.ready() else res.state)


@main.command()
@_app_option
@click.argument("name")
@click.option("-a", "--args", "args_json", default="[]", help="Positional arguments, JSON")
@click.option("-k", "--kwargs", "kwargs_json", default="{}", help="Keyword arguments, JSON")
@click.option("--countdown", type=float, default=None)
@click.option("-Q", "--queue", default=None)
@click.pass_context
def call(ctx, app_spec, name, args_json, kwargs_json, countdown, queue):
    """Send a task by name and print its id (Celery's ``call``)."""
    import json

    app = _resolve_app(ctx, app_spec)
    res = app.send_task(name, json.loads(args_json), json.loads(kwargs_json),
                        countdown=countdown, queue=queue)
    click.echo(res.id)


@main.command()
@_app_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("-l", "--loglevel", default="info", show_default=True)
@click.pass_context
def web(ctx, app_spec, host, port, loglevel):
    """Serve the REST API and the live dashboard (needs fastq[web]; see docs/web.md)."""
    try:
        from fastq.web import web_server
    except ImportError as exc:
        raise click.UsageError(f"fastq web needs the web extra: pip install 'fastq[web]' ({exc})"
                               ) from exc
    app = _resolve_app(ctx, app_spec)
    app.import_modules()
    if app.conf.web_token is None and not app.conf.web_open_writes:
        click.echo("no web_token set: the API's write endpoints are refused (set FASTQ_WEB_TOKEN)",
                   err=True)
    web_server(app, host, port, loglevel.lower()).run()


@main.command()
@_app_option
@click.pass_context
def report(ctx, app_spec):
    """Print versions and the app's settings (secrets masked), for bug reports."""
    from fastq.report import report as build

    app = _resolve_app(ctx, app_spec)
    app.import_modules()
    click.echo(build(app))


@main.command()
@_app_option
@click.option("--dump", is_flag=True, hidden=True, help="Celery's flag: fastq always prints")
@click.option("--from-start", is_flag=True, help="Print the events kept, then follow")
@click.option("-n", "--count", type=int, default=None, help="Stop after this many events")
@click.option("-j", "--json", "as_json", is_flag=True, help="One JSON object per line")
@click.option("-t", "--timeout", type=float, default=None, help="Stop after this many seconds")
@click.pass_context
def events(ctx, app_spec, dump, from_start, count, as_json, timeout):
    """Follow the workers' events (workers run with -E; Celery's ``events --dump``)."""
    import json
    import time

    from fastq.events.records import from_entry

    app = _resolve_app(ctx, app_spec)
    broker = app.broker
    cursor, seen = ("0" if from_start else "$"), 0
    deadline = time.monotonic() + timeout if timeout is not None else None
    while count is None or seen < count:
        wait_ms = 1000 if deadline is None else int(max(deadline - time.monotonic(), 0) * 1000)
        if deadline is not None and wait_ms <= 0:
            break
        cursor, batches = broker.events_since(cursor, max(wait_ms, 1))
        for entry in batches:
            for event in from_entry(entry):
                if count is not None and seen >= count:
                    break
                seen += 1
                click.echo(json.dumps(event, default=repr) if as_json else _event_line(event))


def _event_line(event: dict) -> str:
    from datetime import datetime

    when = datetime.fromtimestamp(event.get("timestamp", 0)).strftime("%H:%M:%S.%f")[:-3]
    what = event.get("uuid") or ""
    extra = {k: v for k, v in event.items() if k in ("name", "args", "result", "runtime",
                                                       "exception", "active", "processed")}
    return f"{when} {event.get('hostname')} {event.get('type')} {what} " + \
        " ".join(f"{k}={v}" for k, v in extra.items())


@main.command()
@_app_option
@click.option("--python", "plain", is_flag=True, help="Python's own shell even if IPython is "
              "installed")
@click.pass_context
def shell(ctx, app_spec, plain):
    """A Python shell with the app, its tasks and the canvas names loaded (Celery's ``shell``)."""
    import code

    import fastq

    app = _resolve_app(ctx, app_spec)
    app.import_modules()
    names: dict = {"app": app, "celery": app, "fastq": fastq}
    names.update({name: getattr(fastq, name) for name in
                  ("chain", "chord", "group", "signature", "chunks", "AsyncResult", "GroupResult")})
    for full, task in app.tasks.items():  # tasks by their short name, as Celery's shell has them
        if not full.startswith("fastq."):
            names.setdefault(full.rsplit(".", 1)[-1], task)
    banner = (f"fastq {fastq.__version__} shell: app {app.main!r}; tasks and chain, group, "
              "chord, signature, AsyncResult loaded")
    if not plain:
        try:
            import IPython
        except ImportError:
            pass
        else:
            IPython.start_ipython(argv=[], user_ns=names)
            return
    code.interact(banner=banner, local=names, exitmsg="")


@main.command("migrate-celery")
@_app_option
@click.option("--from", "source", default=None,
              help="The Celery broker's Redis URL (default: the app's broker)")
@click.option("-Q", "--queues", default="celery", show_default=True,
              help="Celery queues to move, comma-separated")
@click.option("--to-queue", default=None, help="Send every message to this fastq queue instead")
@click.option("--include-unacked", is_flag=True,
              help="Also move what kombu holds unacked (ETA'd tasks): only once no Celery "
                   "worker runs")
@click.option("--dry-run", is_flag=True, help="Count what would be moved; change nothing")
@click.pass_context
def migrate_celery(ctx, app_spec, source, queues, to_queue, include_unacked, dry_run):
    """Move the messages waiting in Celery's Redis queues into fastq's (same task ids)."""
    from fastq.broker.embedded import resolve_broker_url
    from fastq.migrate import migrate

    app = _resolve_app(ctx, app_spec)
    url = source or resolve_broker_url(app.settings.broker_url)
    report = migrate(app, url, [q for q in queues.split(",") if q], to_queue, include_unacked,
                     dry_run)
    verb = "would move" if dry_run else "moved"
    for queue, count in sorted(report.moved.items()):
        click.echo(f"{queue}: {verb} {count}")
    for queue, reasons in sorted(report.kept.items()):
        where = "" if dry_run else f" (kept in fastq:celery-migrate:unmigrated:{queue})"
        click.echo(f"{queue}: {len(reasons)} not movable{where}:", err=True)
        for reason in reasons[:20]:
            click.echo(f"  {reason}", err=True)
    click.echo(f"{verb} {report.total} message(s) in total")
    if report.kept:
        sys.exit(1)


if __name__ == "__main__":
    main()
