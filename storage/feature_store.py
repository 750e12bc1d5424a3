"""Per-image arrays (global descriptor, keypoints, local descriptors) of a gallery, keyed by image id.

`PackedFeatureStore`, the store of every new gallery: append-only segment files with an offset
table, for galleries of millions of images (one file per image stops working long before that).

- A record is `header | payload`: the header holds a magic number, the payload's CRC-32, the image
  id, the payload's length and whether it is a deletion (tombstone). The payload holds the arrays
  (a small JSON table of names, dtypes and shapes, then their bytes).
- Records are only ever appended, to `seg-NNNNN.dat` (a new segment past `segment_bytes`).
- The offset table (id -> segment, offset, length) lives in memory. `flush` fsyncs the segments,
  then writes the table and how far each segment was read (`offsets.tbl`, atomically), so that
  opening a large store reads only the records appended after the last flush.
- Opening scans those records; a torn or corrupt tail (a process killed mid-append) is cut off.
  What was not flushed may be lost, which the indexing pipeline allows for: it flushes the store
  before it saves FAISS and commits SQL, and reconciles all three at the start of every run.
- Deleted or replaced records stay in their segment until `compact` rewrites the live ones.

`FeatureStore` is the older layout (one `.npz` file per image), kept to read galleries built
before; `migrate_npz` moves such a folder into a packed store.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from storage.atomic import atomic_write, atomic_write_bytes

Arrays = dict[str, np.ndarray]

_HEADER = struct.Struct("<4sIqIB")  # magic, crc32(payload), image id, payload length, tombstone
_MAGIC = b"TSKF"
SEGMENT_BYTES = 1 << 30


class Store(Protocol):
    """What the pipeline and the searcher need of a feature store."""

    def put(self, image_id: int, arrays: Arrays) -> None: ...
    def get(self, image_id: int) -> Arrays: ...
    def get_many(self, image_ids: list[int]) -> list[Arrays]: ...
    def delete(self, image_id: int) -> None: ...
    def ids(self) -> set[int]: ...
    def flush(self) -> None: ...
    def nbytes(self) -> int: ...


def encode_arrays(arrays: Arrays) -> bytes:
    """Arrays as one payload: a JSON table (name, dtype, shape) and their C-order bytes."""
    table = []
    blobs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        table.append([name, array.dtype.str, list(array.shape)])
        blobs.append(array.tobytes())
    head = json.dumps(table, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(head)), head, *blobs])


def decode_arrays(payload: bytes | memoryview) -> Arrays:
    """The arrays of `encode_arrays` (views into `payload`, read-only)."""
    (size,) = struct.unpack_from("<I", payload, 0)
    table = json.loads(bytes(payload[4: 4 + size]))
    offset = 4 + size
    out: Arrays = {}
    for name, dtype, shape in table:
        dt = np.dtype(dtype)
        count = math.prod(shape)  # np.prod took half of the decoding time of a record
        out[name] = np.frombuffer(payload, dt, count, offset).reshape(shape)
        offset += count * dt.itemsize
    return out


class PackedFeatureStore:
    """Append-only segments with an offset table (see the module docstring)."""

    def __init__(
        self, root: str | Path, writable: bool = False, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.writable = writable  # one writer (under the gallery's lock); readers never cut tails
        self.segment_bytes = segment_bytes
        self._table: dict[int, tuple[int, int, int]] = {}  # id -> (segment, payload offset, length)
        self._ends: dict[int, int] = {}  # segment -> bytes of whole records
        self._readers: dict[int, int] = {}  # segment -> read-only fd
        self._writer: io.BufferedWriter | None = None
        self._writer_segment = -1
        self._open()

    # opening -----------------------------------------------------------------------------------
    def _segment_path(self, segment: int) -> Path:
        return self.root / f"seg-{segment:05d}.dat"

    def _open(self) -> None:
        checkpoint = self.root / "offsets.tbl"
        scanned: dict[int, int] = {}
        if checkpoint.exists():
            with np.load(checkpoint) as data:
                for i, s, o, n in data["table"]:
                    self._table[int(i)] = (int(s), int(o), int(n))
                scanned = {int(s): int(e) for s, e in data["scanned"]}
        sizes = {int(p.stem[4:]): p.stat().st_size for p in self.root.glob("seg-*.dat")}
        # entries past a segment's end (it lost data the checkpoint had seen; not on a sane disk)
        # or in a segment that is gone are forgotten, and the segment is scanned from the start
        lost = {s for s, end in scanned.items() if sizes.get(s, 0) < end}
        self._table = {k: v for k, v in self._table.items()
                       if v[0] in sizes and v[0] not in lost}
        for segment in sorted(sizes):
            self._scan(segment, 0 if segment in lost else scanned.get(segment, 0))

    def _scan(self, segment: int, start: int) -> None:
        """Read the records of `segment` from `start`; cut off a torn or corrupt tail."""
        path = self._segment_path(segment)
        size = path.stat().st_size
        offset = start
        with open(path, "rb") as handle:
            handle.seek(offset)
            while offset + _HEADER.size <= size:
                head = handle.read(_HEADER.size)
                magic, crc, image_id, length, tombstone = _HEADER.unpack(head)
                if magic != _MAGIC or offset + _HEADER.size + length > size:
                    break
                payload = handle.read(length)
                if zlib.crc32(payload) != crc:
                    break
                if tombstone:
                    self._table.pop(image_id, None)
                else:
                    self._table[image_id] = (segment, offset + _HEADER.size, length)
                offset += _HEADER.size + length
        if offset < size and self.writable:  # a record cut short by a kill: drop it
            with open(path, "r+b") as handle:
                handle.truncate(offset)
        self._ends[segment] = offset

    # writing -----------------------------------------------------------------------------------
    def _append(self, image_id: int, payload: bytes, tombstone: bool) -> tuple[int, int]:
        if not self.writable:
            raise PermissionError(f"{self.root} was opened read-only")
        segment = max(self._ends, default=0)
        end = self._ends.get(segment, 0)
        if end and end + len(payload) > self.segment_bytes:
            segment, end = segment + 1, 0
        if self._writer_segment != segment:
            self._close_writer()
            self._writer = open(self._segment_path(segment), "ab")  # noqa: SIM115 (kept open)
            self._writer_segment = segment
        assert self._writer is not None
        head = _HEADER.pack(_MAGIC, zlib.crc32(payload), int(image_id), len(payload), tombstone)
        self._writer.write(head + payload)
        self._ends[segment] = end + len(head) + len(payload)
        return segment, end + len(head)

    def put(self, image_id: int, arrays: Arrays) -> None:
        """Store `arrays` for `image_id`, replacing what was there (durable after `flush`)."""
        payload = encode_arrays(arrays)
        segment, offset = self._append(image_id, payload, False)
        self._table[int(image_id)] = (segment, offset, len(payload))

    def delete(self, image_id: int) -> None:
        """Forget `image_id` (no error if absent)."""
        if int(image_id) in self._table:
            self._append(image_id, b"", True)
            del self._table[int(image_id)]

    def flush(self) -> None:
        """Make every record appended so far durable, and checkpoint the offset table."""
        if not self.writable:
            return
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
        table = np.array([(i, s, o, n) for i, (s, o, n) in self._table.items()], np.int64)
        scanned = np.array(sorted(self._ends.items()), np.int64).reshape(-1, 2)
        with atomic_write(self.root / "offsets.tbl") as handle:
            np.savez(handle, table=table.reshape(-1, 4), scanned=scanned)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._writer_segment = -1

    def close(self) -> None:
        """Close files (without flushing)."""
        self._close_writer()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # reading -----------------------------------------------------------------------------------
    def _read(self, segment: int, offset: int, length: int) -> bytes:
        if self._writer is not None and segment == self._writer_segment:
            self._writer.flush()  # our own appends are readable before they are durable
        fd = self._readers.get(segment)
        if fd is None:
            fd = self._readers[segment] = os.open(self._segment_path(segment), os.O_RDONLY)
        return os.pread(fd, length, offset)

    def get(self, image_id: int) -> Arrays:
        """Arrays stored for `image_id`; KeyError when there are none."""
        where = self._table.get(int(image_id))
        if where is None:
            raise KeyError(f"no stored features for image id {int(image_id)} in {self.root}")
        return decode_arrays(self._read(*where))

    def get_many(self, image_ids: list[int]) -> list[Arrays]:
        """Arrays of several ids, read in file order (one re-ranking shortlist)."""
        where = [self._table.get(int(i)) for i in image_ids]
        for image_id, w in zip(image_ids, where, strict=True):
            if w is None:
                raise KeyError(f"no stored features for image id {int(image_id)} in {self.root}")
        order = sorted(range(len(where)), key=lambda k: where[k])  # type: ignore[arg-type,return-value]
        out: list[Arrays] = [{}] * len(where)
        for k in order:
            out[k] = decode_arrays(self._read(*where[k]))  # type: ignore[misc]
        return out

    def ids(self) -> set[int]:
        """Ids with stored arrays."""
        return set(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def nbytes(self) -> int:
        """Bytes on disk (segments, dead records included)."""
        return sum(p.stat().st_size for p in self.root.glob("seg-*.dat"))

    def live_bytes(self) -> int:
        """Bytes of the live records' payloads."""
        return sum(n for _, _, n in self._table.values())

    def compact(self) -> None:
        """Rewrite the live records into fresh segments and drop the old ones (reclaims space).

        Crash-safe: the new segments are complete and flushed, with their offset table, before
        the old ones are removed; a kill in between leaves both, and the newer records win."""
        old = sorted(self._ends)
        items = sorted(self._table.items(), key=lambda kv: kv[1])
        payloads = ((image_id, self._read(*where)) for image_id, where in items)
        start = max(old, default=-1) + 1
        self._close_writer()
        self._ends[start] = 0
        for image_id, payload in payloads:
            segment, offset = self._append(image_id, payload, False)
            self._table[image_id] = (segment, offset, len(payload))
        self.flush()
        for segment in old:
            fd = self._readers.pop(segment, None)
            if fd is not None:
                os.close(fd)
            self._ends.pop(segment, None)
            self._segment_path(segment).unlink(missing_ok=True)
        self.flush()


class FeatureStore:
    """The older layout: arrays of each image under `root/<id>.npz`, with a small read cache."""

    def __init__(self, root: str | Path, cache_size: int = 512) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[int, Arrays] = OrderedDict()
        self._cache_size = cache_size

    def _path(self, image_id: int) -> Path:
        return self.root / f"{int(image_id)}.npz"

    def put(self, image_id: int, arrays: Arrays) -> None:
        """Store `arrays` for `image_id`, replacing what was there."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwds
        atomic_write_bytes(self._path(image_id), buffer.getvalue())
        self._cache.pop(int(image_id), None)

    def get(self, image_id: int) -> Arrays:
        """Arrays stored for `image_id`; KeyError when there are none."""
        key = int(image_id)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        path = self._path(key)
        if not path.exists():
            raise KeyError(f"no stored features for image id {key} in {self.root}")
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        self._cache[key] = arrays
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arrays

    def get_many(self, image_ids: list[int]) -> list[Arrays]:
        """Arrays of several ids."""
        return [self.get(i) for i in image_ids]

    def delete(self, image_id: int) -> None:
        """Forget `image_id` (no error if absent)."""
        self._cache.pop(int(image_id), None)
        with contextlib.suppress(FileNotFoundError):
            self._path(image_id).unlink()

    def flush(self) -> None:
        """Every `put` is durable already (atomic file writes)."""

    def ids(self) -> set[int]:
        """Ids with stored arrays."""
        return {int(p.stem) for p in self.root.glob("*.npz") if p.stem.isdigit()}

    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.root.glob("*.npz"))


def migrate_npz(old: FeatureStore, new: PackedFeatureStore) -> Iterator[int]:
    """Copy every entry of a per-file store into a packed one (yields ids as it goes), flush it,
    then delete the old files. Re-running after a kill copies again what was not flushed."""
    ids = sorted(old.ids())
    for image_id in ids:
        new.put(image_id, old.get(image_id))
        yield image_id
    new.flush()
    for image_id in ids:
        old.delete(image_id)
