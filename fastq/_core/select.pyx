# cython: boundscheck=True, wraparound=True
# (Bounds checks stay on for indexing the caller's sequences; the C arrays are fixed-size.)
"""Cython twin of ``select_py.py``: weighted fair choice between the 5 priority levels.

Same algorithm, same floating-point operations in the same order on C doubles, so it returns the
identical list and leaves identical ``credits``. The inputs are read through the same Python-level
conversions as the twin (``float()``, ``int()``, ``operator.index``), then the loop runs on C arrays.
"""
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from libc.limits cimport LLONG_MAX, LLONG_MIN

LEVELS = N_LEVELS
DEFAULT_WEIGHTS = (16.0, 8.0, 4.0, 2.0, 1.0)

cdef object _float = float  # the builtin itself: Cython's inlined float() parses strings its own way
cdef tuple _LEVEL_INTS = (0, 1, 2, 3, 4)


cdef inline double _as_double(object x) except? -1.0:
    """``float(x)`` as a C double."""
    if type(x) is float:
        return PyFloat_AS_DOUBLE(x)
    return PyFloat_AS_DOUBLE(_float(x))


cdef inline long long _clamped(object x) except? -1:
    """A Python int as a C long long, saturating: beyond ±2**63 it behaves the same in the loop."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(x, &overflow)
    if overflow > 0:
        return LLONG_MAX
    if overflow < 0:
        return LLONG_MIN
    return v


cpdef list plan_levels(object available, object head_age_ms, object credits, object weights,
                       object ageing_ms, object n):
    """Return the levels to take the next ``n`` messages from, in order.

    ``available[i]`` ready messages at level i; ``head_age_ms[i]`` age of the oldest of them;
    ``credits`` (5 floats) is the round-robin state, updated in place and kept between calls;
    effective weight = ``weights[i] * (1 + head_age_ms[i] / ageing_ms)`` (no ageing if
    ``ageing_ms <= 0``). Levels with nothing ready have their credit reset to 0 (no banking).
    Ties go to the more urgent (lower) level.
    """
    cdef double ageing = _as_double(ageing_ms)
    cdef long long limit = _clamped(PyNumber_Index(n))
    cdef long long avail[N_LEVELS]
    cdef double eff[N_LEVELS]
    cdef double cred[N_LEVELS]
    cdef bint ready[N_LEVELS]
    cdef double w, total
    cdef int i, best, any_ready = 0
    cdef long long count = 0

    # Counts, converted with int() like the twin (all of them before anything else).
    cdef Py_ssize_t k = 0
    for a in available[:N_LEVELS]:
        v = int(a)
        if k < N_LEVELS:
            avail[k] = _clamped(v)
        k += 1

    # Effective weights; levels with nothing ready lose their credit.
    for i in range(N_LEVELS):
        if i >= k:
            raise IndexError("list index out of range")  # what the twin's avail[i] raises
        eff[i] = 0.0
        ready[i] = avail[i] > 0
        if ready[i]:
            w = _as_double(weights[i])
            if ageing > 0:
                w = w * (1.0 + _as_double(head_age_ms[i]) / ageing)
            eff[i] = w
            any_ready = 1
        else:
            credits[i] = 0.0

    out = []
    if limit <= 0 or not any_ready:
        return out  # the twin's loop would not touch credits

    # Smooth weighted round robin on C doubles (same operations, same order as the twin).
    for i in range(N_LEVELS):
        cred[i] = credits[i] if ready[i] else 0.0
    while count < limit:
        total = 0.0
        best = -1
        for i in range(N_LEVELS):
            if avail[i] > 0:
                total += eff[i]
                cred[i] += eff[i]
                if best < 0 or cred[i] > cred[best]:
                    best = i
        if best < 0:
            break
        cred[best] -= total
        avail[best] -= 1
        PyList_Append(out, _LEVEL_INTS[best])
        count += 1
        if avail[best] == 0:
            cred[best] = 0.0

    # Write back the credits of the levels that took part (the twin updates them in place).
    for i in range(N_LEVELS):
        if ready[i]:
            credits[i] = cred[i]
    return out
