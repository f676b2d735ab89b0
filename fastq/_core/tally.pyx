# cython: language_level=3, boundscheck=False, wraparound=False
"""Counting and timing successful runs for the metrics, as they end: see ``tally_py.py`` (the
pure twin; same arguments, same results)."""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memset
from fastq._core.clock cimport monotonic

cdef enum:
    MAX_BOUNDS = 64
    SUMS = 4  # per slot: run, wait and latency sums, the last prefetch time


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


cdef class RunTally:
    """See ``tally_py.RunTally``. Each (name, queue) seen has a slot of C counters: a count,
    the run, wait and latency buckets (``counts``), their sums and the last prefetch time
    (``sums``, -1: none)."""
    cdef double rb[MAX_BOUNDS]
    cdef double wb[MAX_BOUNDS]
    cdef Py_ssize_t nr, nw, stride, slots, cap, count
    cdef long long* counts
    cdef double* sums
    cdef dict index  # (name, queue) -> slot
    cdef list keys  # slot -> (name, queue)
    cdef str last_name, last_queue
    cdef Py_ssize_t last_slot
    cdef readonly tuple run_bounds, wait_bounds
    cdef public object child, other
    cdef public double offset
    cdef public bint prefetch

    def __init__(self, run_bounds, wait_bounds, child=None, other=None, prefetch=False):
        cdef Py_ssize_t i
        self.run_bounds, self.wait_bounds = tuple(run_bounds), tuple(wait_bounds)
        self.nr, self.nw = len(self.run_bounds), len(self.wait_bounds)
        if self.nr > MAX_BOUNDS or self.nw > MAX_BOUNDS:
            raise ValueError(f"at most {MAX_BOUNDS} histogram bounds")
        for i in range(self.nr):
            self.rb[i] = self.run_bounds[i]
        for i in range(self.nw):
            self.wb[i] = self.wait_bounds[i]
        self.stride = 1 + self.nr + 2 * self.nw
        self.child, self.other, self.offset, self.prefetch = child, other, 0.0, prefetch
        self.index, self.keys, self.last_slot = {}, [], -1

    def __dealloc__(self):
        PyMem_Free(self.counts)
        PyMem_Free(self.sums)

    def __len__(self):
        return self.count

    cdef Py_ssize_t _slot(self, str name, str queue) except -1:
        cdef object found
        cdef long long* counts
        cdef double* sums
        cdef Py_ssize_t cap
        if self.last_slot >= 0 and name == self.last_name and queue == self.last_queue:
            return self.last_slot
        key = (name, queue)
        found = self.index.get(key)
        if found is None:
            if self.slots == self.cap:
                cap = 2 * self.cap if self.cap else 4
                counts = <long long*>PyMem_Realloc(self.counts,
                                                   cap * self.stride * sizeof(long long))
                if counts == NULL:
                    raise MemoryError()
                self.counts = counts
                sums = <double*>PyMem_Realloc(self.sums, cap * SUMS * sizeof(double))
                if sums == NULL:
                    raise MemoryError()
                self.sums, self.cap = sums, cap
            memset(self.counts + self.slots * self.stride, 0, self.stride * sizeof(long long))
            memset(self.sums + self.slots * SUMS, 0, 3 * sizeof(double))
            self.sums[self.slots * SUMS + 3] = -1.0
            found = self.index[key] = self.slots
            self.keys.append(key)
            self.slots += 1
        self.last_name, self.last_queue, self.last_slot = name, queue, found
        return found

    cdef int _add(self, str name, str queue, double started, double ended,
                  object entry, double read_at) except -1:
        cdef Py_ssize_t slot = self._slot(name, queue)
        cdef long long* c = self.counts + slot * self.stride
        cdef double* s = self.sums + slot * SUMS
        cdef double runtime, enqueued, wait, latency
        self.count += 1
        c[0] += 1
        if not started:
            return 0
        if read_at:
            s[3] = started - read_at if started > read_at else 0.0
        runtime = ended - started
        s[0] += runtime
        c[1 + _bucket(self.rb, self.nr, runtime)] += 1
        if entry:
            enqueued = _entry_seconds(entry)
            wait = started + self.offset - enqueued
            if wait < 0.0:
                wait = 0.0
            latency = ended + self.offset - enqueued
            if latency < 0.0:
                latency = 0.0
            s[1] += wait
            c[1 + self.nr + _bucket(self.wb, self.nw, wait)] += 1
            s[2] += latency
            c[1 + self.nr + self.nw + _bucket(self.wb, self.nw, latency)] += 1
        return 0

    def add(self, str name, str queue, double started, double ended, entry,
            double read_at=0.0):
        self._add(name, queue, started, ended, entry, read_at)

    def after_execute(self, task, message, result=None, exc=None):
        cdef object child = self.child
        if exc is not None or child is None:
            if self.other is not None:
                self.other(task, message, result, exc)
            return
        self._add(message.task, message.queue, child.task_started, monotonic(),
                  child.current_entry, child.batch_read_at if self.prefetch else 0.0)

    def take(self):
        cdef dict out = {}
        cdef Py_ssize_t slot, i, nr = self.nr, nw = self.nw
        cdef long long* c
        cdef double* s
        for slot in range(self.slots):
            c = self.counts + slot * self.stride
            if not c[0]:
                continue
            s = self.sums + slot * SUMS
            out[self.keys[slot]] = [
                c[0], s[0], [c[1 + i] for i in range(nr)],
                s[1], [c[1 + nr + i] for i in range(nw)],
                s[2], [c[1 + nr + nw + i] for i in range(nw)],
                s[3] if s[3] >= 0.0 else None]
        if self.slots:
            memset(self.counts, 0, self.slots * self.stride * sizeof(long long))
            for slot in range(self.slots):
                s = self.sums + slot * SUMS
                s[0] = s[1] = s[2] = 0.0
                s[3] = -1.0
        self.count = 0
        return out
