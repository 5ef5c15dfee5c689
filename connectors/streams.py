"""Small stream helpers the backends share."""

from __future__ import annotations

import io
from typing import BinaryIO


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of ``stream``."""
    chunks = []
    left = size
    while left:
        data = stream.read(left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


class Prefixed(io.RawIOBase):
    """``head`` (already read, to choose how to upload), then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if len(self._head):
            size = len(self._head) if size is None or size < 0 else size
            piece, self._head = self._head[:size], self._head[size:]
            return bytes(piece)
        return self._stream.read(-1 if size is None else size)
