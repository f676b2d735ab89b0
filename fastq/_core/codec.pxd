# C-level interface of fastq._core.codec, so other Cython modules can ``cimport`` it and call the
# codec without Python call overhead. The envelope format is documented in codec_py.py.

cdef enum:
    ENV_MAGIC = 0xFA
    ENV_VERSION = 1
    ENV_FIXED_SIZE = 30         # u8 magic, version, flags, priority; u16; 2 x i64; 2 x u32
    ENV_FLAG_COMPRESSED = 4
    ENV_MAX_PRIORITY = 4
    ENV_NSTR = 7                # id, task, parent_id, root_id, group_id, dag_id, idem_key

cpdef bytes encode_message(object msg)
cpdef object decode_message(object data)
cpdef tuple pack_body(object args, object kwargs, object codec, object threshold)
cpdef tuple unpack_body(object body, object codec, object compressed, object accept_pickle=*)
cpdef bytes pack_value(object value, object codec, object threshold)
cpdef object unpack_value(object data, object accept_pickle=*)
