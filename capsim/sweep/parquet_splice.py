"""Join Parquet row groups encoded separately into one file by copying bytes, with no decode or re-encode.

A Parquet file is ``PAR1``, the row groups' column chunks, then a footer: the Thrift (compact protocol)
``FileMetaData``, its length (4 bytes, little-endian) and ``PAR1``. Each chunk of a sweep is encoded by
pyarrow as a whole file of its own; its column chunks are appended to the output as they are, and only the
byte offsets its metadata records (relative to its own file) are shifted to where they now sit. At the end the
footer is written once, from the first chunk's metadata (schema, writer, key-value metadata: the same for
every chunk) with the total row count and every chunk's row groups. Field ids below are those of
``parquet.thrift`` (apache/parquet-format, src/main/thrift/parquet.thrift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"PAR1"

# compact-protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# FileMetaData fields
_FMD_NUM_ROWS, _FMD_ROW_GROUPS = 3, 4
# RowGroup fields
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
# ColumnChunk fields
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
# ColumnMetaData fields that hold file offsets: data, index and dictionary page; bloom filter
_CMD_OFFSETS = frozenset({9, 10, 11, 14})


class ParquetSpliceError(ValueError):
    """The bytes are not a Parquet file this module can splice (an internal error: pyarrow wrote them)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _put_varint(value: int, out: bytearray) -> None:
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _skip(buf: bytes, pos: int, ttype: int) -> int:
    """Position after one value of compact type ``ttype`` starting at ``pos``."""
    if ttype in (_TRUE, _FALSE):
        return pos  # a struct field's bool lives in its header
    if ttype == _BYTE:
        return pos + 1
    if ttype in (_I16, _I32, _I64):
        return _varint(buf, pos)[1]
    if ttype == _DOUBLE:
        return pos + 8
    if ttype == _BINARY:
        n, pos = _varint(buf, pos)
        return pos + n
    if ttype in (_LIST, _SET):
        size, elem, pos = _list_header(buf, pos)
        for _ in range(size):
            pos = pos + 1 if elem in (_TRUE, _FALSE) else _skip(buf, pos, elem)
        return pos
    if ttype == _MAP:
        size, pos = _varint(buf, pos)
        if size == 0:
            return pos
        kv = buf[pos]
        pos += 1
        for _ in range(size):
            pos = _skip(buf, pos, kv >> 4)
            pos = _skip(buf, pos, kv & 0x0F)
        return pos
    if ttype == _STRUCT:
        return _walk_struct(buf, pos, None, {})
    raise ParquetSpliceError(f"unknown thrift compact type {ttype}")


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    head = buf[pos]
    pos += 1
    size = head >> 4
    if size == 15:
        size, pos = _varint(buf, pos)
    return size, head & 0x0F, pos


def _put_list_header(size: int, elem: int, out: bytearray) -> None:
    if size < 15:
        out.append((size << 4) | elem)
    else:
        out.append(0xF0 | elem)
        _put_varint(size, out)


Rewrite = Callable[[bytes, int, int, bytearray | None], int]
"""Handler for one field: (buffer, value position, type, output or None) -> position after the value; it
writes the (possibly changed) value to the output."""


def _walk_struct(buf: bytes, pos: int, out: bytearray | None, handlers: dict[int, Rewrite]) -> int:
    """Copy one struct from ``pos`` to ``out`` (None: only skip it), letting ``handlers`` rewrite fields."""
    last = 0
    while True:
        head = buf[pos]
        start = pos
        pos += 1
        ttype = head & 0x0F
        if ttype == _STOP:
            if out is not None:
                out.append(_STOP)
            return pos
        delta = head >> 4
        if delta:
            fid = last + delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _unzigzag(raw)
        last = fid
        if out is not None:
            out += buf[start:pos]  # the header is unchanged: field ids and types stay
        handler = handlers.get(fid)
        if handler is None:
            end = _skip(buf, pos, ttype)
            if out is not None:
                out += buf[pos:end]
            pos = end
        else:
            pos = handler(buf, pos, ttype, out)


def _shift_i64(delta: int) -> Rewrite:
    def rewrite(buf: bytes, pos: int, ttype: int, out: bytearray | None) -> int:
        raw, end = _varint(buf, pos)
        if out is not None:
            _put_varint(_zigzag(_unzigzag(raw) + delta), out)
        return end

    return rewrite


def _set_int(value: int) -> Rewrite:
    def rewrite(buf: bytes, pos: int, ttype: int, out: bytearray | None) -> int:
        _, end = _varint(buf, pos)
        if out is not None:
            _put_varint(_zigzag(value), out)
        return end

    return rewrite


def _struct_field(handlers: dict[int, Rewrite]) -> Rewrite:
    def rewrite(buf: bytes, pos: int, ttype: int, out: bytearray | None) -> int:
        return _walk_struct(buf, pos, out, handlers)

    return rewrite


def _list_of_structs(handlers_for: Callable[[int], dict[int, Rewrite]]) -> Rewrite:
    def rewrite(buf: bytes, pos: int, ttype: int, out: bytearray | None) -> int:
        size, elem, pos = _list_header(buf, pos)
        if out is not None:
            _put_list_header(size, elem, out)
        for i in range(size):
            pos = _walk_struct(buf, pos, out, handlers_for(i))
        return pos

    return rewrite


@dataclass(frozen=True)
class EncodedChunk:
    """One chunk's Parquet file split into its column-chunk bytes and its metadata (footer Thrift)."""

    body: bytes
    """The bytes between the leading ``PAR1`` and the footer: the row groups' column chunks."""
    metadata: bytes
    num_rows: int
    num_row_groups: int
    row_groups_pos: int = -1
    """Where the metadata's row-group list starts (-1: not located yet)."""


def split_file(data: bytes) -> EncodedChunk:
    """Split a whole Parquet file (as pyarrow writes it) into body and metadata."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise ParquetSpliceError("not a Parquet file")
    footer_len = int.from_bytes(data[-8:-4], "little")
    footer_start = len(data) - 8 - footer_len
    metadata = data[footer_start:-8]
    fields = _top_fields(metadata)
    num_rows = _unzigzag(_varint(metadata, fields[_FMD_NUM_ROWS][0])[0])
    rg_pos = fields[_FMD_ROW_GROUPS][0]
    num_row_groups = _list_header(metadata, rg_pos)[0]
    return EncodedChunk(data[4:footer_start], metadata, num_rows, num_row_groups, rg_pos)


class _Found(Exception):
    """Raised inside a walk once the fields looked for are located (the rest need not be parsed)."""


def _top_fields(metadata: bytes) -> dict[int, tuple[int, int]]:
    """Positions of the FileMetaData's num_rows and row_groups: id -> (value position, type). The walk stops
    at the row-group list's start: parsing the row groups (every column's statistics) only to skip them was
    two thirds of the splicing time."""
    found: dict[int, tuple[int, int]] = {}

    def record(fid: int) -> Rewrite:
        def rewrite(buf: bytes, pos: int, ttype: int, out: bytearray | None) -> int:
            found[fid] = (pos, ttype)
            if _FMD_NUM_ROWS in found and _FMD_ROW_GROUPS in found:
                raise _Found
            return _skip(buf, pos, ttype)

        return rewrite

    try:
        _walk_struct(metadata, 0, None, {fid: record(fid) for fid in range(1, 16)})
    except _Found:
        pass
    if _FMD_NUM_ROWS not in found or _FMD_ROW_GROUPS not in found:
        raise ParquetSpliceError("FileMetaData without num_rows or row_groups")
    return found


def row_groups_at(chunk: EncodedChunk, body_offset: int, first_ordinal: int) -> bytes:
    """The chunk's row groups (Thrift RowGroup structs, concatenated) with every file offset moved so that its
    body starts at ``body_offset`` in the output, and ordinals numbered from ``first_ordinal``."""
    delta = body_offset - len(MAGIC)  # in its own file the body started right after the magic
    shift = _shift_i64(delta)
    column_meta = dict.fromkeys(_CMD_OFFSETS, shift)
    column_chunk = {
        _CC_FILE_OFFSET: shift,
        _CC_META: _struct_field(column_meta),
        _CC_OFFSET_INDEX: shift,
        _CC_COLUMN_INDEX: shift,
    }

    def row_group(i: int) -> dict[int, Rewrite]:
        return {
            _RG_COLUMNS: _list_of_structs(lambda _: column_chunk),
            _RG_FILE_OFFSET: shift,
            _RG_ORDINAL: _set_int(first_ordinal + i),
        }

    meta = chunk.metadata
    pos = chunk.row_groups_pos if chunk.row_groups_pos >= 0 else _top_fields(meta)[_FMD_ROW_GROUPS][0]
    size, _, pos = _list_header(meta, pos)
    out = bytearray()
    for i in range(size):
        pos = _walk_struct(meta, pos, out, row_group(i))
    return bytes(out)


def footer(template: EncodedChunk, row_groups: bytes, num_row_groups: int, num_rows: int) -> bytes:
    """The output's footer: ``template``'s FileMetaData with ``num_rows`` and the given row groups, its
    length and the closing magic."""
    out = bytearray()

    def set_row_groups(buf: bytes, pos: int, ttype: int, out_: bytearray | None) -> int:
        end = _skip(buf, pos, ttype)
        if out_ is not None:
            _put_list_header(num_row_groups, _STRUCT, out_)
            out_ += row_groups
        return end

    _walk_struct(
        template.metadata, 0, out, {_FMD_NUM_ROWS: _set_int(num_rows), _FMD_ROW_GROUPS: set_row_groups}
    )
    return bytes(out) + len(out).to_bytes(4, "little") + MAGIC
