"""Tasks the workflow tests run on real workers (broker from FASTQ_BROKER_URL)."""
from __future__ import annotations

import time

from fastq import App

app = App("flows")


class Boom(Exception):
    pass


@app.task
def add(x, y):
    return x + y


@app.task
def inc(x):
    return x + 1


@app.task
def ident(x):
    return x


@app.task
def tsum(values):
    return sum(values)


@app.task
def collect(values, tag=None):
    return [tag, values] if tag is not None else values


@app.task
def nap(x, ms=2):
    time.sleep(ms / 1000.0)
    return x


@app.task
def fail(*_args):
    raise Boom("it broke")


@app.task
def fail_later(ms=300):
    time.sleep(ms / 1000.0)
    raise Boom("it broke late")


@app.task
def record(*args):
    """Appends its arguments to a Redis list (to count how often something ran)."""
    import msgpack
    import redis

    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush("flows:record", msgpack.packb([list(a) if isinstance(a, tuple) else a
                                                for a in args], default=str))
    return len(args)


@app.task
def on_error(request, exc, traceback):
    import msgpack
    import redis

    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush("flows:errors", msgpack.packb([request.id, type(exc).__name__, str(exc),
                                                bool(traceback)]))


@app.task
def on_error_old(task_id):
    import redis

    redis.Redis.from_url(app.conf.broker_url).rpush("flows:errors_old", task_id)


@app.task(queue="other")
def other_inc(x):
    return x + 1


@app.task
def slow_inc(x, ms=2):
    time.sleep(ms / 1000.0)
    return x + 1


@app.task(bind=True)
def flaky_inc(self, x):
    """Retried once (its first run asks for a retry), then x + 1; counts its runs in Redis."""
    import redis

    runs = redis.Redis.from_url(app.conf.broker_url).incr(f"flows:runs:{self.request.id}")
    if runs == 1:
        raise self.retry(countdown=0.05)
    return x + 1


@app.task(bind=True)
def swap(self, x, how="task"):
    """Replaces itself: by inc(x), by the chain inc(x) | inc, or by group(inc(x), inc(x + 10))."""
    from fastq import group

    if how == "task":
        return self.replace(inc.s(x))
    if how == "chain":
        return self.replace(inc.s(x) | inc.s())
    return self.replace(group(inc.s(x), inc.s(x + 10)))


@app.task(bind=True)
def headers_of(self, *_args):
    """The custom headers its message carries."""
    return {k: v for k, v in self.request.options.items()
            if isinstance(k, str) and not k.startswith("fastq.")}
