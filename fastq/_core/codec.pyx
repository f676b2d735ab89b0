# cython: boundscheck=True, wraparound=True
# (Bounds checks stay on for indexing Python objects; raw pointer reads below are checked by hand.)
"""Cython twin of ``codec_py.py``: the envelope and body codec.

``codec_py.py`` is the reference (it documents the format): this module gives byte-identical output
and raises the same exceptions with the same messages for the same input. Speed comes from writing
the fixed header and the length-prefixed strings straight into one preallocated bytes object, and
from parsing through a ``const unsigned char*`` with an explicit bounds check before every read.
Options and bodies go through the same msgpack / orjson / pickle / lz4.block calls as the twin.
"""
import pickle

import lz4.block
import msgpack
import orjson

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.string cimport memcpy

from fastq.errors import DecodeError, EncodeError
from fastq._core.message import Message

MAGIC = ENV_MAGIC
VERSION = ENV_VERSION
FIXED_SIZE = ENV_FIXED_SIZE
FLAG_COMPRESSED = ENV_FLAG_COMPRESSED
MAX_PRIORITY = ENV_MAX_PRIORITY

# The library functions the twin calls, looked up once.
cdef object _packb = msgpack.packb
cdef object _unpackb = msgpack.unpackb
cdef object _orjson_dumps = orjson.dumps
cdef object _orjson_loads = orjson.loads
cdef object _OPT_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
cdef object _pickle_dumps = pickle.dumps
cdef object _pickle_loads = pickle.loads
cdef object _lz4_compress = lz4.block.compress
cdef object _lz4_decompress = lz4.block.decompress

cdef tuple _CODEC_NAMES = ("msgpack", "json", "pickle")
cdef tuple _STR_NAMES = ("id", "task", "parent_id", "root_id", "group_id", "dag_id", "idem_key")


# ---- big-endian integer access (the caller guarantees the bytes are there) ----

cdef inline void _put_u16(unsigned char* p, unsigned int v) noexcept:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _put_u32(unsigned char* p, unsigned long long v) noexcept:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _put_u64(unsigned char* p, unsigned long long v) noexcept:
    _put_u32(p, v >> 32)
    _put_u32(p + 4, v & 0xFFFFFFFFULL)


cdef inline unsigned int _get_u16(const unsigned char* p) noexcept:
    return (<unsigned int>p[0] << 8) | p[1]


cdef inline unsigned long long _get_u32(const unsigned char* p) noexcept:
    return ((<unsigned long long>p[0] << 24) | (<unsigned long long>p[1] << 16)
            | (<unsigned long long>p[2] << 8) | p[3])


cdef inline long long _get_i64(const unsigned char* p) noexcept:
    # two's complement, as struct's ">q"
    return <long long>((_get_u32(p) << 32) | _get_u32(p + 4))


# ---- encode ----

cdef long long _ranged(str name, object value, long long low, long long high) except? -1:
    """The twin's ``_ranged``: an integer (``__index__``, so not a float) in [low, high]."""
    cdef int overflow = 0
    cdef long long v
    if type(value) is int:  # the usual case: skip __index__
        number = value
    else:
        try:
            number = PyNumber_Index(value)
        except TypeError:
            raise EncodeError(
                f"message {name} must be an integer, not {type(value).__name__}") from None
    v = PyLong_AsLongLongAndOverflow(number, &overflow)
    if overflow or v < low or v > high:
        raise EncodeError(f"{name}={number} is out of range [{low}, {high}]")
    return v


cpdef bytes encode_message(object msg):
    """Encode a message (whose body is already encoded) into envelope bytes."""
    cdef long long priority = _ranged("priority", msg.priority, 0, ENV_MAX_PRIORITY)
    cdef long long codec = _ranged("codec", msg.codec, 0, 2)
    cdef long long attempt = _ranged("attempt", msg.attempt, 0, 0xFFFF)
    cdef long long eta_ms = _ranged("eta_ms", msg.eta_ms, LLONG_MIN, LLONG_MAX)
    cdef long long expires_ms = _ranged("expires_ms", msg.expires_ms, LLONG_MIN, LLONG_MAX)
    cdef long long soft_ms = _ranged("soft_limit_ms", msg.soft_limit_ms, 0, 0xFFFFFFFF)
    cdef long long hard_ms = _ranged("hard_limit_ms", msg.hard_limit_ms, 0, 0xFFFFFFFF)
    cdef int flags = <int>codec | (ENV_FLAG_COMPRESSED if msg.compressed else 0)

    # The 7 strings as UTF-8 (pointer, length); ``strs`` keeps the str objects alive.
    cdef const char* sp[ENV_NSTR]
    cdef Py_ssize_t sn[ENV_NSTR]
    cdef Py_ssize_t size = ENV_FIXED_SIZE + 2 * ENV_NSTR + 4
    cdef int i
    cdef tuple strs = (msg.id, msg.task, msg.parent_id, msg.root_id, msg.group_id, msg.dag_id,
                       msg.idem_key)
    for i in range(ENV_NSTR):
        value = strs[i]
        name = _STR_NAMES[i]
        sp[i] = NULL
        sn[i] = 0
        if value is not None and not isinstance(value, str):
            raise EncodeError(f"message {name} must be a str or None, not {type(value).__name__}")
        if not value:  # None or "": length 0
            if i < 2:  # id and task are required
                raise EncodeError(f"message {name} must not be empty")
            continue
        try:
            sp[i] = PyUnicode_AsUTF8AndSize(value, &sn[i])
        except UnicodeEncodeError as exc:  # lone surrogates
            raise EncodeError(f"message {name} cannot be encoded as utf-8") from exc
        if sn[i] > 0xFFFF:
            raise EncodeError(f"message {name} is longer than 65535 bytes")
        size += sn[i]

    # Options: a msgpack map, or nothing when empty.
    cdef bytes opts = None
    cdef Py_ssize_t opts_len = 0
    options = msg.options
    if options:
        if not isinstance(options, dict):
            raise EncodeError(f"message options must be a dict, not {type(options).__name__}")
        try:
            opts = _packb(options, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"message options cannot be encoded: {exc}") from exc
        opts_len = PyBytes_GET_SIZE(opts)
        if <unsigned long long>opts_len > 0xFFFFFFFFULL:
            raise EncodeError("message options are longer than 4294967295 bytes")
        size += opts_len

    # Body: bytes as they are; bytearray/memoryview copied like the twin's bytes(body).
    body = msg.body
    if type(body) is not bytes:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise EncodeError(f"message body must be bytes, not {type(body).__name__}")
        body = bytes(body)
    cdef Py_ssize_t body_len = PyBytes_GET_SIZE(body)
    size += body_len

    # Everything is validated and measured: fill one preallocated bytes object.
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = ENV_MAGIC
    p[1] = ENV_VERSION
    p[2] = <unsigned char>flags
    p[3] = <unsigned char>priority
    _put_u16(p + 4, <unsigned int>attempt)
    _put_u64(p + 6, <unsigned long long>eta_ms)
    _put_u64(p + 14, <unsigned long long>expires_ms)
    _put_u32(p + 22, <unsigned long long>soft_ms)
    _put_u32(p + 26, <unsigned long long>hard_ms)
    p += ENV_FIXED_SIZE
    for i in range(ENV_NSTR):
        _put_u16(p, <unsigned int>sn[i])
        p += 2
        if sn[i]:
            memcpy(p, sp[i], sn[i])
            p += sn[i]
    _put_u32(p, <unsigned long long>opts_len)
    p += 4
    if opts_len:
        memcpy(p, PyBytes_AS_STRING(opts), opts_len)
        p += opts_len
    if body_len:
        memcpy(p, PyBytes_AS_STRING(body), body_len)
    return out


# ---- decode ----

cdef object _get_str(const unsigned char* data, Py_ssize_t* pos, Py_ssize_t end, str name):
    """Read one u16-length-prefixed UTF-8 string at ``pos[0]`` (advanced past it); None if empty."""
    cdef Py_ssize_t at = pos[0]
    cdef Py_ssize_t n
    if end - at < 2:
        raise DecodeError(f"envelope truncated in {name}")
    n = _get_u16(data + at)
    at += 2
    if n == 0:
        pos[0] = at
        return None
    if end - at < n:
        raise DecodeError(f"envelope truncated in {name}")
    try:
        value = PyUnicode_DecodeUTF8(<char*>(data + at), n, NULL)  # strict, as bytes.decode
    except UnicodeDecodeError as exc:
        raise DecodeError(f"envelope {name} is not valid utf-8") from exc
    pos[0] = at + n
    return value


cpdef object decode_message(object data):
    """Parse envelope bytes; the body stays encoded. Raises DecodeError on anything malformed."""
    if isinstance(data, bytearray):  # private copy: the buffer must not change while we read it
        data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(data), PyByteArray_GET_SIZE(data))
    elif not isinstance(data, bytes):
        raise DecodeError(f"envelope must be bytes, not {type(data).__name__}")
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    if end < ENV_FIXED_SIZE:
        raise DecodeError(f"envelope truncated: {end} bytes, header needs {ENV_FIXED_SIZE}")

    # Fixed header (30 bytes, present).
    cdef int magic = p[0]
    cdef int version = p[1]
    cdef int flags = p[2]
    cdef int priority = p[3]
    if magic != ENV_MAGIC:
        raise DecodeError(f"not a fastq envelope (magic byte 0x{magic:02x})")
    if version != ENV_VERSION:
        raise DecodeError(f"unsupported envelope version {version}")
    cdef int codec = flags & 3
    if codec == 3 or flags & ~7:
        raise DecodeError(f"invalid envelope flags 0x{flags:02x}")
    if priority > ENV_MAX_PRIORITY:
        raise DecodeError(f"invalid priority {priority}")

    # The 7 length-prefixed strings.
    cdef Py_ssize_t pos = ENV_FIXED_SIZE
    msg_id = _get_str(p, &pos, end, "id")
    task = _get_str(p, &pos, end, "task")
    parent_id = _get_str(p, &pos, end, "parent_id")
    root_id = _get_str(p, &pos, end, "root_id")
    group_id = _get_str(p, &pos, end, "group_id")
    dag_id = _get_str(p, &pos, end, "dag_id")
    idem_key = _get_str(p, &pos, end, "idem_key")
    if msg_id is None or task is None:
        raise DecodeError("envelope has no id or no task name")

    # u32 length + msgpack map of options.
    cdef unsigned long long n
    if end - pos < 4:
        raise DecodeError("envelope truncated in options")
    n = _get_u32(p + pos)
    pos += 4
    if n:
        if n > <unsigned long long>(end - pos):
            raise DecodeError("envelope truncated in options")
        packed = PyBytes_FromStringAndSize(<const char*>(p + pos), <Py_ssize_t>n)
        try:
            options = _unpackb(packed, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several types for bad input
            raise DecodeError(f"envelope options undecodable: {exc}") from exc
        if not isinstance(options, dict):
            raise DecodeError("envelope options are not a map")
        pos += <Py_ssize_t>n
    else:
        options = {}

    body = PyBytes_FromStringAndSize(<const char*>(p + pos), end - pos)
    return Message(msg_id, task, body, codec, (flags & ENV_FLAG_COMPRESSED) != 0, priority,
                   _get_u16(p + 4), _get_i64(p + 6), _get_i64(p + 14), _get_u32(p + 22),
                   _get_u32(p + 26), parent_id, root_id, group_id, dag_id, idem_key, options)


# ---- bodies and values (thin: the time goes into the serialisers) ----

cdef object _dumps(object obj, object codec):
    try:
        if codec == 0:
            return _packb(obj, use_bin_type=True)
        if codec == 1:
            return _orjson_dumps(obj, option=_OPT_NON_STR_KEYS)
        if codec == 2:
            return _pickle_dumps(obj, protocol=5)
    except Exception as exc:
        raise EncodeError(f"cannot encode with {_CODEC_NAMES[codec]}: {exc}") from exc
    raise EncodeError(f"unknown codec {codec}")


cdef object _loads(object data, object codec, object accept_pickle):
    try:
        if codec == 0:
            return _unpackb(data, raw=False, strict_map_key=False)
        if codec == 1:
            return _orjson_loads(data)
    except Exception as exc:
        raise DecodeError(f"body undecodable: {exc}") from exc
    if codec == 2:
        if not accept_pickle:
            raise DecodeError("pickle content refused (not in accept_content)")
        try:
            return _pickle_loads(data)
        except Exception as exc:
            raise DecodeError(f"body undecodable: {exc}") from exc
    raise DecodeError(f"unknown codec {codec}")


cdef tuple _maybe_compress(object data, object threshold):
    if 0 < threshold < len(data):
        packed = _lz4_compress(data, store_size=True)
        if len(packed) < len(data):
            return packed, True
    return data, False


cdef object _decompress(object data):
    try:
        return _lz4_decompress(data)
    except Exception as exc:
        raise DecodeError(f"body lz4 data corrupt: {exc}") from exc


cpdef tuple pack_body(object args, object kwargs, object codec, object threshold):
    """Encode (args, kwargs); lz4-compress when longer than ``threshold`` bytes (0 = never)."""
    return _maybe_compress(_dumps((list(args), dict(kwargs)), codec), threshold)


cpdef tuple unpack_body(object body, object codec, object compressed, object accept_pickle=False):
    """Decode a body into ``(args_tuple, kwargs_dict)``; DecodeError when it is not that shape."""
    if compressed:
        body = _decompress(body)
    obj = _loads(body, codec, accept_pickle)
    if (not isinstance(obj, (list, tuple)) or len(obj) != 2
            or not isinstance(obj[0], (list, tuple)) or not isinstance(obj[1], dict)):
        raise DecodeError("body is not [args, kwargs]")
    return tuple(obj[0]), obj[1]


cpdef bytes pack_value(object value, object codec, object threshold):
    """Encode any value (a result record) as one flags byte + codec bytes, lz4 above ``threshold``."""
    data, compressed = _maybe_compress(_dumps(value, codec), threshold)
    flags = codec | (ENV_FLAG_COMPRESSED if compressed else 0)
    if type(data) is not bytes:  # the serialisers all return bytes; stay exact if one does not
        return bytes((flags,)) + data
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 1)
    cdef char* p = PyBytes_AS_STRING(out)
    p[0] = <unsigned char>flags
    memcpy(p + 1, PyBytes_AS_STRING(data), n)
    return out


cpdef object unpack_value(object data, object accept_pickle=False):
    """Inverse of pack_value."""
    cdef int flags
    if not data:
        raise DecodeError("empty value")
    if type(data) is not bytes:  # bytearray, memoryview...: the twin's steps on Python objects
        flags_obj = data[0]
        codec_obj = flags_obj & 3
        if codec_obj == 3 or flags_obj & ~7:
            raise DecodeError(f"invalid value flags 0x{flags_obj:02x}")
        body = data[1:]
        if flags_obj & ENV_FLAG_COMPRESSED:
            body = _decompress(body)
        return _loads(body, codec_obj, accept_pickle)
    flags = (<const unsigned char*>PyBytes_AS_STRING(data))[0]
    if (flags & 3) == 3 or flags & ~7:
        raise DecodeError(f"invalid value flags 0x{flags:02x}")
    body = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + 1, PyBytes_GET_SIZE(data) - 1)
    if flags & ENV_FLAG_COMPRESSED:
        body = _decompress(body)
    return _loads(body, flags & 3, accept_pickle)
