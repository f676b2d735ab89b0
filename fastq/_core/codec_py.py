"""Pure-Python twin of ``codec.pyx``: the envelope and body codec.

This file is the reference: the Cython module must give byte-identical output and raise the same
errors for the same input (``tests/test_core_twins.py`` checks it with hypothesis).

Envelope, version 1 (all integers big-endian)::

    0   u8   magic 0xFA
    1   u8   version (1)
    2   u8   flags: bits 0-1 body codec (0 msgpack, 1 json, 2 pickle), bit 2 body lz4-compressed
    3   u8   priority 0 (critical) .. 4 (batch)
    4   u16  attempt
    6   i64  eta_ms        (0 = none)
    14  i64  expires_ms    (0 = none)
    22  u32  soft_limit_ms (0 = none)
    26  u32  hard_limit_ms (0 = none)
    30  7 x (u16 length + utf-8): id, task, parent_id, root_id, group_id, dag_id, idem_key
         (length 0 = None; id and task must not be empty)
    ..  u32 length + msgpack map of options (length 0 = {})
    ..  body: the rest, encoded with the body codec
"""
from __future__ import annotations

import operator
import pickle
import struct

import lz4.block
import msgpack
import orjson

from fastq._core.message import Message
from fastq.errors import DecodeError, EncodeError

MAGIC = 0xFA
VERSION = 1
FIXED = struct.Struct(">BBBBHqqII")
FIXED_SIZE = FIXED.size  # 30
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
FLAG_COMPRESSED = 4
MAX_PRIORITY = 4
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def _ranged(name: str, value, low: int, high: int) -> int:
    """``value`` as an int (anything with ``__index__``, so not a float) in [low, high]."""
    try:
        number = operator.index(value)
    except TypeError:
        raise EncodeError(f"message {name} must be an integer, not {type(value).__name__}") from None
    if not (low <= number <= high):
        raise EncodeError(f"{name}={number} is out of range [{low}, {high}]")
    return number


def _put_str(parts: list, name: str, value: str | None, required: bool = False) -> None:
    if value is not None and not isinstance(value, str):
        raise EncodeError(f"message {name} must be a str or None, not {type(value).__name__}")
    if not value:
        if required:
            raise EncodeError(f"message {name} must not be empty")
        parts.append(b"\x00\x00")
        return
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise EncodeError(f"message {name} cannot be encoded as utf-8") from exc
    if len(data) > 0xFFFF:
        raise EncodeError(f"message {name} is longer than 65535 bytes")
    parts.append(U16.pack(len(data)))
    parts.append(data)


def encode_message(msg: Message) -> bytes:
    """Encode a message (whose body is already encoded) into envelope bytes."""
    priority = _ranged("priority", msg.priority, 0, MAX_PRIORITY)
    codec = _ranged("codec", msg.codec, 0, 2)
    attempt = _ranged("attempt", msg.attempt, 0, 0xFFFF)
    eta_ms = _ranged("eta_ms", msg.eta_ms, _I64_MIN, _I64_MAX)
    expires_ms = _ranged("expires_ms", msg.expires_ms, _I64_MIN, _I64_MAX)
    soft_limit_ms = _ranged("soft_limit_ms", msg.soft_limit_ms, 0, 0xFFFFFFFF)
    hard_limit_ms = _ranged("hard_limit_ms", msg.hard_limit_ms, 0, 0xFFFFFFFF)
    flags = codec | (FLAG_COMPRESSED if msg.compressed else 0)
    parts = [
        FIXED.pack(MAGIC, VERSION, flags, priority, attempt, eta_ms, expires_ms,
                   soft_limit_ms, hard_limit_ms)
    ]
    _put_str(parts, "id", msg.id, required=True)
    _put_str(parts, "task", msg.task, required=True)
    _put_str(parts, "parent_id", msg.parent_id)
    _put_str(parts, "root_id", msg.root_id)
    _put_str(parts, "group_id", msg.group_id)
    _put_str(parts, "dag_id", msg.dag_id)
    _put_str(parts, "idem_key", msg.idem_key)
    options = msg.options
    if options:
        if not isinstance(options, dict):  # anything else would give an undecodable envelope
            raise EncodeError(f"message options must be a dict, not {type(options).__name__}")
        try:
            opts = msgpack.packb(options, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"message options cannot be encoded: {exc}") from exc
        if len(opts) > 0xFFFFFFFF:
            raise EncodeError("message options are longer than 4294967295 bytes")
        parts.append(U32.pack(len(opts)))
        parts.append(opts)
    else:
        parts.append(b"\x00\x00\x00\x00")
    body = msg.body
    if not isinstance(body, (bytes, bytearray, memoryview)):  # bytes(5) would be 5 zero bytes
        raise EncodeError(f"message body must be bytes, not {type(body).__name__}")
    parts.append(bytes(body))
    return b"".join(parts)


def _get_str(data: bytes, pos: int, end: int, name: str) -> tuple[str | None, int]:
    if pos + 2 > end:
        raise DecodeError(f"envelope truncated in {name}")
    n = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if n == 0:
        return None, pos
    if pos + n > end:
        raise DecodeError(f"envelope truncated in {name}")
    try:
        return data[pos:pos + n].decode("utf-8"), pos + n
    except UnicodeDecodeError as exc:
        raise DecodeError(f"envelope {name} is not valid utf-8") from exc


def decode_message(data: bytes) -> Message:
    """Parse envelope bytes; the body stays encoded. Raises DecodeError on anything malformed."""
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(f"envelope must be bytes, not {type(data).__name__}")
    end = len(data)
    if end < FIXED_SIZE:
        raise DecodeError(f"envelope truncated: {end} bytes, header needs {FIXED_SIZE}")
    magic, version, flags, priority, attempt, eta, expires, soft, hard = FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise DecodeError(f"not a fastq envelope (magic byte 0x{magic:02x})")
    if version != VERSION:
        raise DecodeError(f"unsupported envelope version {version}")
    codec = flags & 3
    if codec == 3 or flags & ~7:
        raise DecodeError(f"invalid envelope flags 0x{flags:02x}")
    if priority > MAX_PRIORITY:
        raise DecodeError(f"invalid priority {priority}")
    pos = FIXED_SIZE
    msg_id, pos = _get_str(data, pos, end, "id")
    task, pos = _get_str(data, pos, end, "task")
    parent_id, pos = _get_str(data, pos, end, "parent_id")
    root_id, pos = _get_str(data, pos, end, "root_id")
    group_id, pos = _get_str(data, pos, end, "group_id")
    dag_id, pos = _get_str(data, pos, end, "dag_id")
    idem_key, pos = _get_str(data, pos, end, "idem_key")
    if msg_id is None or task is None:
        raise DecodeError("envelope has no id or no task name")
    if pos + 4 > end:
        raise DecodeError("envelope truncated in options")
    n = (data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    if n:
        if pos + n > end:
            raise DecodeError("envelope truncated in options")
        try:
            options = msgpack.unpackb(data[pos:pos + n], raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several types for bad input
            raise DecodeError(f"envelope options undecodable: {exc}") from exc
        if not isinstance(options, dict):
            raise DecodeError("envelope options are not a map")
        pos += n
    else:
        options = {}
    return Message(msg_id, task, bytes(data[pos:]), codec, bool(flags & FLAG_COMPRESSED),
                   priority, attempt, eta, expires, soft, hard, parent_id, root_id, group_id,
                   dag_id, idem_key, options)


def _dumps(obj, codec: int) -> bytes:
    try:
        if codec == 0:
            return msgpack.packb(obj, use_bin_type=True)
        if codec == 1:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        if codec == 2:
            return pickle.dumps(obj, protocol=5)
    except Exception as exc:
        raise EncodeError(f"cannot encode with {('msgpack', 'json', 'pickle')[codec]}: {exc}") from exc
    raise EncodeError(f"unknown codec {codec}")


def _loads(data: bytes, codec: int, accept_pickle: bool):
    try:
        if codec == 0:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        if codec == 1:
            return orjson.loads(data)
    except Exception as exc:
        raise DecodeError(f"body undecodable: {exc}") from exc
    if codec == 2:
        if not accept_pickle:
            raise DecodeError("pickle content refused (not in accept_content)")
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise DecodeError(f"body undecodable: {exc}") from exc
    raise DecodeError(f"unknown codec {codec}")


def _maybe_compress(data: bytes, threshold: int) -> tuple[bytes, bool]:
    if 0 < threshold < len(data):
        packed = lz4.block.compress(data, store_size=True)
        if len(packed) < len(data):
            return packed, True
    return data, False


def _decompress(data: bytes) -> bytes:
    try:
        return lz4.block.decompress(data)
    except Exception as exc:
        raise DecodeError(f"body lz4 data corrupt: {exc}") from exc


def pack_body(args, kwargs, codec: int, threshold: int) -> tuple[bytes, bool]:
    """Encode (args, kwargs); lz4-compress when longer than ``threshold`` bytes (0 = never)."""
    return _maybe_compress(_dumps((list(args), dict(kwargs)), codec), threshold)


def unpack_body(body: bytes, codec: int, compressed: bool, accept_pickle: bool = False):
    """Decode a body into ``(args_tuple, kwargs_dict)``; DecodeError when it is not that shape."""
    if compressed:
        body = _decompress(body)
    obj = _loads(body, codec, accept_pickle)
    if (not isinstance(obj, (list, tuple)) or len(obj) != 2
            or not isinstance(obj[0], (list, tuple)) or not isinstance(obj[1], dict)):
        raise DecodeError("body is not [args, kwargs]")
    return tuple(obj[0]), obj[1]


def pack_value(value, codec: int, threshold: int) -> bytes:
    """Encode any value (a result record) as one flags byte + codec bytes, lz4 above ``threshold``."""
    data, compressed = _maybe_compress(_dumps(value, codec), threshold)
    return bytes((codec | (FLAG_COMPRESSED if compressed else 0),)) + data


def unpack_value(data: bytes, accept_pickle: bool = False):
    """Inverse of pack_value."""
    if not data:
        raise DecodeError("empty value")
    flags = data[0]
    codec = flags & 3
    if codec == 3 or flags & ~7:
        raise DecodeError(f"invalid value flags 0x{flags:02x}")
    body = data[1:]
    if flags & FLAG_COMPRESSED:
        body = _decompress(body)
    return _loads(body, codec, accept_pickle)
