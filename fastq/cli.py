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

    spec = app_spec or (ctx.obj or {}).get("app_spec")
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
    ctx.obj = {"app_spec": app_spec}
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
@click.option("-E", "--task-events", is_flag=True, hidden=True)
@click.option("-O", "optimization", default=None, hidden=True)
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.option("--without-heartbeat", is_flag=True, hidden=True)
@click.pass_context
def worker(ctx, app_spec, concurrency, queues, prefetch, prefetch_multiplier, loglevel, name, pool,
           task_events, optimization, without_gossip, without_mingle, without_heartbeat):
    """Start a worker: a supervisor and N child processes."""
    from fastq.worker.supervisor import Supervisor

    log.configure(loglevel)
    app = _resolve_app(ctx, app_spec)
    if prefetch:
        app.conf.prefetch = prefetch
    if pool and pool not in ("prefork", "processes"):
        click.echo(f"note: --pool {pool} ignored; fastq children are processes with an event loop "
                   "for async tasks", err=True)
    qs = [q for q in (queues or app.conf.default_queue).split(",") if q]
    sup = Supervisor(app, concurrency or os.cpu_count() or 1, qs, name=name)
    sys.exit(sup.run())


@main.command()
@_app_option
@click.pass_context
def status(ctx, app_spec):
    """Queues x priorities (depth, pending, oldest age) and live workers."""
    import msgpack

    app = _resolve_app(ctx, app_spec)
    broker = app.broker
    click.echo(f"broker {app.conf.broker_url}")
    click.echo(f"{'queue':<20} {'priority':<9} {'depth':>9} {'pending':>9} {'oldest':>10}")
    for queue in broker.queues():
        for st in broker.stats(queue):
            if st.depth or st.pending:
                click.echo(f"{queue:<20} {keys.PRIORITY_NAMES[st.level]:<9} {st.depth:>9} "
                           f"{st.pending:>9} {st.oldest_age_ms / 1000:>9.1f}s")
    workers = [msgpack.unpackb(w) for w in broker.workers()]
    click.echo(f"\n{len(workers)} live worker children")
    for w in sorted(workers, key=lambda w: w["consumer"]):
        age = time.time() - w["at"]
        click.echo(f"  {w['consumer']:<40} pid {w['pid']:<8} processed {w['processed']:<10} "
                   f"failed {w['failed']:<8} seen {age:.1f}s ago  queues {','.join(w['queues'])}")


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


if __name__ == "__main__":
    main()
