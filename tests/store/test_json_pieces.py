"""JSON documents written piece by piece are the bytes json.dumps gives the whole document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slidelabel.store.json_pieces import (
    compact,
    key_sorted,
    list_pieces,
    object_pieces,
    write_pieces_atomic,
)


def test_pieces_make_the_compact_text_of_the_whole_document():
    inner = {"type": "pixelmap", "values": None, "user": {"name": "strōma \"b\"", "x": [1.5, None, True]}}
    document = {"name": "é", "elements": None, "after": {"k": []}}
    values = [[0, 1, 2], [3], [4, 5]]
    pieces = object_pieces(document, {"elements": list_pieces([
        (compact({"a": 1}),),
        object_pieces(inner, {"values": list_pieces((",".join(map(str, chunk)),) for chunk in values)}),
        (compact([]),)])})
    whole = {**document, "elements": [{"a": 1}, {**inner, "values": [0, 1, 2, 3, 4, 5]}, []]}
    assert "".join(pieces) == json.dumps(whole, separators=(",", ":"))
    assert "".join(list_pieces([])) == "[]"


def test_key_sorted_orders_by_both_keys_and_keeps_ties_in_the_order_given(tmp_path: Path):
    given = [(2, 5, "a"), (0, 9, '"ü"'), (2, 1, "b"), (0, 9, "c"), (1, -3, "d" * 5000)]
    assert list(key_sorted(given, folder=tmp_path)) == ['"ü"', "c", "d" * 5000, "b", "a"]
    assert list(key_sorted([], folder=tmp_path)) == []
    assert list(tmp_path.iterdir()) == []  # the spill file has no name


def test_key_sorted_reads_back_in_chunks(tmp_path: Path):
    given = [(i % 7, -i, str(i)) for i in range(10_000)]
    expected = [text for *_, text in sorted(given, key=lambda item: item[:2])]
    assert list(key_sorted(given, folder=tmp_path, texts_per_read=3)) == expected


def test_an_unfinished_document_leaves_no_file(tmp_path: Path):
    def pieces():
        yield "["
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        write_pieces_atomic(tmp_path / "a.json", pieces())
    assert list(tmp_path.iterdir()) == []
    assert write_pieces_atomic(tmp_path / "a.json", iter(["[1,", "2]"])) == 5
    assert json.loads((tmp_path / "a.json").read_text()) == [1, 2]
