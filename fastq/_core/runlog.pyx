# cython: language_level=3, boundscheck=False, wraparound=False
"""A round's task runs, packed as they end: see ``runlog_py.py`` (the pure twin; the same bytes)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport PyObject_Repr
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcpy
from fastq._core.clock cimport monotonic

import msgpack

cdef str SUCCEEDED = "task-succeeded"
cdef Py_ssize_t KEEP_CAP = 1 << 20  # a take() hands a bigger buffer back to the allocator


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(Buffer* b, Py_ssize_t more) except -1:
    """Grow the buffer (doubling) to hold ``more`` bytes beyond what it holds."""
    cdef Py_ssize_t cap = b.cap
    cdef char* grown
    while cap < b.size + more:
        cap *= 2
    grown = <char*>PyMem_Realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data, b.cap = grown, cap
    return 0


cdef inline int _put(Buffer* b, const char* src, Py_ssize_t n) except -1:
    if b.size + n > b.cap:
        _reserve(b, n)
    memcpy(b.data + b.size, src, n)
    b.size += n
    return 0


cdef inline int _put_header(Buffer* b, unsigned char small_base, Py_ssize_t small_limit,
                            unsigned char c8, unsigned char c16, unsigned char c32,
                            Py_ssize_t n) except -1:
    """A length prefix: small (base | n), or a code and a big-endian 8-, 16- or 32-bit length
    (c8 0: no 8-bit form)."""
    cdef unsigned char h[5]
    if n < small_limit:
        h[0] = small_base | <unsigned char>n
        return _put(b, <char*>h, 1)
    if c8 and n < 0x100:
        h[0], h[1] = c8, <unsigned char>n
        return _put(b, <char*>h, 2)
    if n < 0x10000:
        h[0], h[1], h[2] = c16, <unsigned char>(n >> 8), <unsigned char>n
        return _put(b, <char*>h, 3)
    h[0] = c32
    h[1], h[2] = <unsigned char>(n >> 24), <unsigned char>(n >> 16)
    h[3], h[4] = <unsigned char>(n >> 8), <unsigned char>n
    return _put(b, <char*>h, 5)


cdef int _put_double(Buffer* b, double d) except -1:
    cdef unsigned char f[9]
    cdef unsigned long long bits
    cdef int i
    memcpy(&bits, &d, 8)
    f[0] = 0xcb
    for i in range(8):
        f[1 + i] = <unsigned char>(bits >> (56 - 8 * i))
    return _put(b, <char*>f, 9)


cdef int _pack(Buffer* b, object obj) except -1:
    """``obj`` as msgpack writes it: the values a run holds here, anything else by msgpack."""
    cdef Py_ssize_t n
    cdef const char* s
    cdef bytes other
    if obj is None:
        return _put(b, "\xc0", 1)
    if obj is True:
        return _put(b, "\xc3", 1)
    if obj is False:
        return _put(b, "\xc2", 1)
    if type(obj) is bytes:
        n = PyBytes_GET_SIZE(obj)
        if n >= 0x100000000:
            raise ValueError("bytes object is too large")
        _put_header(b, 0, 0, 0xc4, 0xc5, 0xc6, n)
        return _put(b, PyBytes_AS_STRING(obj), n)
    if type(obj) is str:
        s = PyUnicode_AsUTF8AndSize(obj, &n)
        if n >= 0x100000000:
            raise ValueError("unicode string is too large")
        _put_header(b, 0xa0, 32, 0xd9, 0xda, 0xdb, n)
        return _put(b, s, n)
    if type(obj) is float:
        return _put_double(b, PyFloat_AS_DOUBLE(obj))
    other = msgpack.packb(obj, default=repr)  # anything else, as msgpack writes it
    return _put(b, PyBytes_AS_STRING(other), PyBytes_GET_SIZE(other))


cdef class RunLog:
    """See ``runlog_py.RunLog``."""
    cdef Buffer b
    cdef Py_ssize_t count
    cdef public object child
    cdef public object other
    cdef public Py_ssize_t repr_max

    def __cinit__(self, *args, **kwargs):
        self.b.size, self.b.cap, self.count = 0, 4096, 0
        self.b.data = <char*>PyMem_Malloc(self.b.cap)
        if self.b.data == NULL:
            raise MemoryError()

    def __init__(self, child=None, other=None, Py_ssize_t repr_max=1024):
        self.child, self.other, self.repr_max = child, other, repr_max

    def __dealloc__(self):
        PyMem_Free(self.b.data)

    def __len__(self):
        return self.count

    def add(self, envelope, queue, outcome, started, ended, info):
        """One run: (envelope, queue, outcome, started, ended, info)."""
        cdef Py_ssize_t mark = self.b.size
        try:
            _put(&self.b, "\x96", 1)  # an array of six
            _pack(&self.b, envelope)
            _pack(&self.b, queue)
            _pack(&self.b, outcome)
            _pack(&self.b, started)
            _pack(&self.b, ended)
            _pack(&self.b, info)
        except BaseException:
            self.b.size = mark  # nothing of a run that could not be packed
            raise
        self.count += 1

    def after_execute(self, task, message, result=None, exc=None):
        """The middleware hook: a success is packed here; any other run goes to
        ``other(task, message, result, exc)``."""
        cdef str text
        cdef object child = self.child
        cdef Py_ssize_t mark = self.b.size
        if exc is not None or child is None:
            if self.other is not None:
                self.other(task, message, result, exc)
            return
        text = PyObject_Repr(result)
        if len(text) > self.repr_max:
            text = text[:self.repr_max - 3] + "..."
        try:
            _put(&self.b, "\x96", 1)
            _pack(&self.b, child.current_data)
            _pack(&self.b, message.queue)
            _pack(&self.b, SUCCEEDED)
            _pack(&self.b, child.task_started)
            _put_double(&self.b, monotonic())
            _pack(&self.b, text)
        except BaseException:
            self.b.size = mark
            raise
        self.count += 1

    def take(self):
        """The runs added since the last take, as one msgpack array; the log starts again."""
        cdef Buffer head
        cdef char h[5]  # the longest array header (and _put never grows it: 5 fit)
        cdef bytes out
        head.data, head.size, head.cap = h, 0, 5
        _put_header(&head, 0x90, 16, 0, 0xdc, 0xdd, self.count)
        out = PyBytes_FromStringAndSize(NULL, head.size + self.b.size)
        memcpy(PyBytes_AS_STRING(out), h, head.size)
        memcpy(PyBytes_AS_STRING(out) + head.size, self.b.data, self.b.size)
        self.b.size, self.count = 0, 0
        if self.b.cap > KEEP_CAP:
            PyMem_Free(self.b.data)
            self.b.cap = 4096
            self.b.data = <char*>PyMem_Malloc(self.b.cap)
            if self.b.data == NULL:
                raise MemoryError()
        return out
