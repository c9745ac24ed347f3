"""Large JSON documents written piece by piece, so that memory holds a piece, not the document.

A document is given as its compact JSON text (``json.dumps(..., separators=(",", ":"))``, the
bytes slidelabel's exports have always had) cut into pieces: :func:`object_pieces` and
:func:`list_pieces` give the text of an object or a list whose long lists arrive as pieces, one
item at a time; :func:`write_pieces` and :func:`write_pieces_atomic` write them in chunks of
about :data:`CHUNK_BYTES`. :func:`key_sorted` puts texts made in one order (the nearby
superpixels an export traces together) into another (the legend's) through a temporary file, so
that memory holds their keys, not their texts.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path

__all__ = ["CHUNK_BYTES", "compact", "key_sorted", "list_pieces", "object_pieces", "write_pieces",
           "write_pieces_atomic"]

#: Bytes gathered before a write (and read back at most at once by :func:`key_sorted`).
CHUNK_BYTES = 1 << 20


def compact(value: object) -> str:
    """``value`` as compact JSON text (no spaces, ASCII only), as the whole document would hold it."""
    return json.dumps(value, separators=(",", ":"))


def list_pieces(items: Iterable[Iterable[str]]) -> Iterator[str]:
    """The compact JSON text of a list, in pieces, from its items' texts (each given as pieces;
    a short one as a 1-tuple). An item may also be several values' texts joined by commas."""
    yield "["
    for i, item in enumerate(items):
        if i:
            yield ","
        yield from item
    yield "]"


def object_pieces(document: Mapping[str, object], streamed: Mapping[str, Iterable[str]]) -> Iterator[str]:
    """The compact JSON text of ``document``, in pieces, where the value of each key of
    ``streamed`` is the text those pieces make (from :func:`list_pieces` or this function),
    whatever ``document`` holds for it; the keys keep ``document``'s order."""
    yield "{"
    for i, (key, value) in enumerate(document.items()):
        yield f"{',' if i else ''}{compact(key)}:"
        if key in streamed:
            yield from streamed[key]
        else:
            yield compact(value)
    yield "}"


def write_pieces(out: BinaryIO, pieces: Iterable[str]) -> int:
    """Write ``pieces`` (ASCII JSON text) to ``out`` in chunks of about :data:`CHUNK_BYTES`;
    returns the bytes written."""
    chunk: list[bytes] = []
    gathered = written = 0
    for piece in pieces:
        data = piece.encode()
        chunk.append(data)
        gathered += len(data)
        if gathered >= CHUNK_BYTES:
            written += out.write(b"".join(chunk))
            chunk, gathered = [], 0
    written += out.write(b"".join(chunk))
    return written


def write_pieces_atomic(path: Path, pieces: Iterable[str]) -> int:
    """Write ``pieces`` to ``path`` atomically (:func:`~slidelabel.store.atomic.atomic_path`):
    a reader finds the whole document or none; returns the bytes written."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as out:
                return write_pieces(out, pieces)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def key_sorted(keyed_texts: Iterable[tuple[int, int, str]], *, folder: Path | None = None,
               texts_per_read: int = 4096) -> Iterator[str]:
    """The texts of ``(first key, second key, text)`` in the order of their keys (ties in the
    order given), by way of an unnamed temporary file in ``folder`` (the system's when None).

    Memory holds about 40 bytes per text (keys, offsets, order) and ``texts_per_read`` texts,
    never all of them: texts made batch by batch in one order (nearby superpixels) come out in
    another (the legend's). The first text comes out once every one has been given.
    """
    try:
        # Closed by the `with` below; opened apart so that only its own failure is an OutputError.
        spill = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
    except OSError as error:
        raise OutputError(f"cannot write a temporary file in {folder or tempfile.gettempdir()}: "
                          f"{error.strerror or error}") from error
    with spill:
        first, second, end = array("q"), array("q"), array("q")
        written = 0

        def noted(given: Iterable[tuple[int, int, str]]) -> Iterator[str]:
            nonlocal written
            for first_key, second_key, text in given:
                first.append(first_key)
                second.append(second_key)
                written += len(text.encode())
                end.append(written)
                yield text

        write_pieces(spill, noted(keyed_texts))
        spill.flush()
        end_T = np.frombuffer(end, np.int64)
        order_T = np.lexsort((np.frombuffer(second, np.int64), np.frombuffer(first, np.int64)))
        for chunk in range(0, order_T.size, texts_per_read):
            texts_R = order_T[chunk:chunk + texts_per_read]
            start_R = np.where(texts_R > 0, end_T[texts_R - 1], 0)
            for start, stop in zip(start_R.tolist(), end_T[texts_R].tolist(), strict=True):
                spill.seek(start)  # a buffered read: all of the text, whatever the system reads at once
                yield spill.read(stop - start).decode()
