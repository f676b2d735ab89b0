# The clocks the core reads without the interpreter (cimported; no module of its own).
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double monotonic() noexcept nogil:
    """``time.monotonic()``, as CPython computes it on Linux."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>(ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9
