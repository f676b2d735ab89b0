# cython: language_level=3, boundscheck=False, wraparound=False
"""Packing a round's task runs: see ``runpack_py.py`` (the pure twin; the same bytes)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcpy

import msgpack


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


cdef int _pack(Buffer* b, object obj, bint top) except -1:
    cdef Py_ssize_t n, i
    cdef const char* s
    cdef unsigned char f[9]
    cdef double d
    cdef unsigned long long bits
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
        d = PyFloat_AS_DOUBLE(obj)
        memcpy(&bits, &d, 8)
        f[0] = 0xcb
        for i in range(8):
            f[1 + i] = <unsigned char>(bits >> (56 - 8 * i))
        return _put(b, <char*>f, 9)
    if top and type(obj) is tuple:
        n = PyTuple_GET_SIZE(obj)
        _put_header(b, 0x90, 16, 0, 0xdc, 0xdd, n)
        for i in range(n):
            _pack(b, <object>PyTuple_GET_ITEM(obj, i), False)
        return 0
    if top and type(obj) is list:
        n = len(obj)
        _put_header(b, 0x90, 16, 0, 0xdc, 0xdd, n)
        for i in range(n):
            _pack(b, (<list>obj)[i], False)
        return 0
    other = msgpack.packb(obj, default=repr)  # anything else, as msgpack writes it
    return _put(b, PyBytes_AS_STRING(other), PyBytes_GET_SIZE(other))


def pack_runs(list runs):
    cdef Buffer b
    cdef Py_ssize_t i, n = len(runs)
    b.size, b.cap = 0, 256 + 128 * n
    b.data = <char*>PyMem_Malloc(b.cap)
    if b.data == NULL:
        raise MemoryError()
    try:
        _put_header(&b, 0x90, 16, 0, 0xdc, 0xdd, n)
        for i in range(n):
            _pack(&b, runs[i], True)
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        PyMem_Free(b.data)
