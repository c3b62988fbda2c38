#!/usr/bin/env python3
"""Malformed safetensors files, one per kind of damage, for tests/unit/test_safetensors_corpus.cpp.

Writes tests/data/safetensors_malformed/<kind>.safetensors (each under 200 bytes) and EXPECTED.txt, one line
per file: "<filename>\t<substring the reader's error message must contain>". Files in that folder that are
no longer generated are removed. Plain Python, no dependencies:
  python3 tests/reference/gen_malformed_safetensors.py
"""
import argparse
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "data", "safetensors_malformed")


def st(header, data=b""):
    """A safetensors image: u64 little-endian header length, the header, the data buffer."""
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype="F32", shape="[2]", offsets="[0,8]"):
    return '{"dtype":"%s","shape":%s,"data_offsets":%s}' % (dtype, shape, offsets)


OK = '{"a":%s}' % entry()
DATA8 = bytes(range(8))

# name -> (bytes, expected substring of the error message)
CASES = {
    # framing: the 8-byte length and the header bytes
    "empty_file": (b"", "0 bytes, too short for the 8-byte header length"),
    "truncated_length": (b"\x10\x00\x00", "3 bytes, too short"),
    "header_len_huge": (b"\xff" * 8 + b"{}", "exceeds the 100 MiB limit"),
    "truncated_header": (st(OK, DATA8)[:40], "runs past the end of the 40-byte file"),
    "header_empty": (st(""), "header does not start with '{'"),
    "header_not_object": (st("[1,2]"), "header does not start with '{'"),
    # the header's JSON
    "header_not_json": (st('{"a":'), "header is not valid JSON"),
    "header_trailing_garbage": (st(OK + " x", DATA8), "header is not valid JSON"),
    "header_invalid_utf8": (st(b'{"\xff\xfe":' + entry().encode() + b"}", DATA8), "header is not valid JSON"),
    "header_nested_too_deep": (st('{"a":%s}' % entry(shape="[" * 10 + "]" * 10), DATA8),
                               "header nests deeper than 8 levels"),
    "duplicate_tensor_name": (st('{"a":%s,"a":%s}' % (entry(), entry(offsets="[8,16]")), DATA8 * 2),
                              'header has duplicate key "a"'),
    "duplicate_field": (st('{"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}', DATA8),
                        'header has duplicate key "dtype"'),
    # one tensor entry
    "not_an_object_entry": (st('{"a":3}'), "tensor 'a': entry must be an object"),
    "unknown_field": (st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}', DATA8),
                      "tensor 'a': unknown field 'extra'"),
    "missing_dtype": (st('{"a":{"shape":[2],"data_offsets":[0,8]}}', DATA8), "missing or non-string 'dtype'"),
    "bad_dtype": (st('{"a":%s}' % entry(dtype="X9"), DATA8), 'unsupported dtype "X9"'),
    "missing_shape": (st('{"a":{"dtype":"F32","data_offsets":[0,8]}}', DATA8), "missing or non-list 'shape'"),
    "shape_negative": (st('{"a":%s}' % entry(shape="[-2]"), DATA8),
                       "shape entry must be a non-negative integer, got -2"),
    "shape_float": (st('{"a":%s}' % entry(shape="[2.5]"), DATA8),
                    "shape entry must be a non-negative integer, got 2.5"),
    "shape_overflow": (st('{"a":%s}' % entry(shape="[4294967296,4294967296,16]"), DATA8), "overflows"),
    # numel 0, but torch's strides (product of the other dims) overflow int64
    "shape_overflow_zero_dim": (st('{"a":%s}' % entry(shape="[0,4611686018427387904,4611686018427387904]",
                                                        offsets="[0,0]")), "overflows"),
    "missing_data_offsets": (st('{"a":{"dtype":"F32","shape":[2]}}', DATA8),
                             "'data_offsets' must be a list [begin, end]"),
    "offsets_wrong_arity": (st('{"a":%s}' % entry(offsets="[0]"), DATA8), "'data_offsets' must be a list"),
    "negative_offsets": (st('{"a":%s}' % entry(offsets="[-8,0]"), DATA8),
                         "data_offsets must be a non-negative integer, got -8"),
    "offsets_u64_overflow": (st('{"a":%s}' % entry(offsets="[0,18446744073709551616]"), DATA8),
                             "data_offsets must be a non-negative integer"),
    "offsets_reversed": (st('{"a":%s}' % entry(offsets="[8,0]"), DATA8), "data_offsets [8, 0] outside"),
    "offsets_past_end": (st(OK, DATA8[:4]), "data_offsets [0, 8] outside the 4-byte data buffer"),
    "numel_bytes_mismatch": (st('{"a":%s}' % entry(shape="[3]"), DATA8), "8 bytes for shape [3] of F32"),
    # the tensors together must tile the data buffer
    "overlapping": (st('{"a":%s,"b":%s}' % (entry(), entry(offsets="[4,12]")), DATA8 + DATA8[:4]),
                    "tensor 'b' starts at byte 4, expected 8 (overlapping tensors or a hole"),
    "hole_in_data": (st('{"a":%s,"b":%s}' % (entry(), entry(offsets="[12,20]")), DATA8 * 2 + DATA8[:4]),
                     "tensor 'b' starts at byte 12, expected 8"),
    "trailing_bytes": (st(OK, DATA8 + b"\0" * 4), "4 trailing bytes after the last tensor"),
    # __metadata__
    "metadata_not_object": (st('{"__metadata__":["k"]}'), "__metadata__ must be an object of strings"),
    "metadata_not_string": (st('{"__metadata__":{"k":1}}'), "__metadata__['k'] must be a string, got 1"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    out = os.path.normpath(ap.parse_args().out_dir)
    os.makedirs(out, exist_ok=True)
    names = {name + ".safetensors" for name in CASES}
    for f in os.listdir(out):
        if f != "EXPECTED.txt" and f not in names:
            os.remove(os.path.join(out, f))
    lines = []
    for name, (data, expect) in sorted(CASES.items()):
        assert "\t" not in expect and "\n" not in expect and len(data) < 200, name
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(data)
        lines.append("%s.safetensors\t%s\n" % (name, expect))
    with open(os.path.join(out, "EXPECTED.txt"), "w") as f:
        f.write("# <file>\\t<substring of the error>; generated by tests/reference/gen_malformed_safetensors.py\n")
        f.writelines(lines)
    print("%d malformed files -> %s" % (len(CASES), out))


if __name__ == "__main__":
    main()
