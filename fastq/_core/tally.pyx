# cython: language_level=3, boundscheck=False, wraparound=False
"""Counting and timing a round's successful runs for the metrics: see ``tally_py.py`` (the
pure twin; same arguments, same results)."""

from fastq._core.tally_py import new_stats

cdef enum:
    MAX_BOUNDS = 64


cdef inline Py_ssize_t _bucket(double* bounds, Py_ssize_t n, double value) noexcept:
    # bisect_left: the first bound >= value (n - 1 is +Inf in every histogram)
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline double _entry_seconds(bytes entry):
    cdef const unsigned char* p = entry
    cdef Py_ssize_t i, n = len(entry)
    cdef long long ms = 0
    for i in range(n):
        if p[i] == 45:  # '-'
            break
        ms = ms * 10 + (p[i] - 48)
    return ms / 1000.0


def tally_runs(list runs, double offset, tuple run_bounds, tuple wait_bounds, dict stats):
    cdef double rb[MAX_BOUNDS]
    cdef double wb[MAX_BOUNDS]
    cdef Py_ssize_t nr = len(run_bounds), nw = len(wait_bounds), i
    if nr > MAX_BOUNDS or nw > MAX_BOUNDS:
        raise ValueError(f"at most {MAX_BOUNDS} histogram bounds")
    for i in range(nr):
        rb[i] = run_bounds[i]
    for i in range(nw):
        wb[i] = wait_bounds[i]
    cdef double started, ended, runtime, enqueued, wait, latency
    cdef list st, buckets
    cdef object entry
    cdef tuple run
    for run in runs:
        msg = run[0]
        key = (msg.task, msg.queue)
        st = stats.get(key)
        if st is None:
            st = new_stats(run_bounds, wait_bounds)
            stats[key] = st
        st[0] = st[0] + 1
        started = run[1]
        if not started:
            continue
        ended = run[2]
        runtime = ended - started
        st[1] = st[1] + runtime
        buckets = st[2]
        i = _bucket(rb, nr, runtime)
        buckets[i] = buckets[i] + 1
        entry = run[3]
        if entry:
            enqueued = _entry_seconds(entry)
            wait = started + offset - enqueued
            if wait < 0.0:
                wait = 0.0
            latency = ended + offset - enqueued
            if latency < 0.0:
                latency = 0.0
            st[3] = st[3] + wait
            buckets = st[4]
            i = _bucket(wb, nw, wait)
            buckets[i] = buckets[i] + 1
            st[5] = st[5] + latency
            buckets = st[6]
            i = _bucket(wb, nw, latency)
            buckets[i] = buckets[i] + 1
