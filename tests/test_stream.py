"""winnow/stream.py: a run dir read one shard at a time. Lines and byte offsets by hand, bad
lines named by file and line, the completion index of a hand-made generate stage (each
cell's numbers, its row read back by offset, text hashes), dedup by hash against dedup by
text, and several rounds' cells as one set keyed by (prompt_id, column)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import fake_generate

from winnow import select as sel
from winnow.errors import WinnowError
from winnow.records import BOM, Prompt
from winnow.stream import NO_ROW, Cells, dedup_by_hash, iter_lines, loads, scan_generations, text_hash

PROMPTS = [Prompt(id="a", text="first"), Prompt(id="b", messages=({"role": "user", "content": "second"},))]
TEXTS = {"a": ["x", "two words", "x"], "b": ["é ü", "", "y"]}


@pytest.fixture()
def run(tmp_path):
    fake_generate(tmp_path / "run", PROMPTS, TEXTS)
    return tmp_path / "run"


def test_iter_lines_gives_line_numbers_and_byte_offsets_skipping_blank_lines_and_the_bom():
    data = BOM + b'{"a":1}\n\n  \n{"b":2}'
    # the BOM is 3 bytes; line 1 is 8 bytes; lines 2 and 3 are blank; line 4 has no newline
    assert list(iter_lines(data)) == [(1, 3, b'{"a":1}\n'), (4, 15, b'{"b":2}')]
    assert list(iter_lines(b"")) == []


def test_a_bad_line_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "shard.jsonl"
    assert loads(b'{"k": [1, 2]}\n', path, 3) == {"k": [1, 2]}
    with pytest.raises(WinnowError, match=rf"^{path}:7: malformed JSON: "):
        loads(b'{"k": ', path, 7)
    with pytest.raises(WinnowError) as e:
        loads(b"[1, 2]\n", path, 2)
    assert str(e.value) == f"{path}:2: expected a JSON object, got list"


def test_the_index_holds_each_cells_numbers_and_reads_its_row_back(run):
    index, manifest = scan_generations(run, hashes=True)
    assert manifest["num_columns"] == 3 and index.num_columns == 3 and len(index) == 6
    assert [p.id for p in index.prompts] == ["a", "b"] and index.prompts[1].messages == PROMPTS[1].messages
    assert index.shard.tolist() == [[0, 0, 0], [0, 0, 0]] and index.shards == [run / "generate/shard-m0-00000.jsonl"]
    # fake_generate counts words as tokens and ends every row with "stop"
    assert index.num_tokens.tolist() == [[1, 2, 1], [2, 0, 1]] and not index.cut.any()
    assert index.order.tolist() == [0, 1, 2, 3, 4, 5]  # the shard's row order, flat i * C + j
    lines = (run / "generate/shard-m0-00000.jsonl").read_bytes().splitlines(keepends=True)
    assert index.offset.ravel().tolist() == [sum(len(x) for x in lines[:k]) for k in range(6)]
    assert index.length.ravel().tolist() == [len(x) for x in lines]
    assert index.row(1, 0) == json.loads(lines[3]) and index.row(1, 0)["text"] == "é ü"
    # equal texts, equal hashes
    assert index.hashes is not None
    assert index.hashes[0, 0] == index.hashes[0, 2] == text_hash("x") != index.hashes[0, 1]
    index.close()
    assert scan_generations(run)[0].hashes is None  # hashing only when asked


def test_dedup_by_hash_by_hand_and_as_dedup_by_text():
    rewards = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    hashes = np.array([[7, 8, 7], [9, 9, 9]], dtype=np.uint64)
    present = np.array([[True, True, True], [True, False, True]])
    # row 0: column 2 repeats column 0; row 1: column 1 is no completion, column 2 repeats column 0
    got = dedup_by_hash(rewards, hashes, present)
    np.testing.assert_array_equal(got, [[1.0, 2.0, np.nan], [4.0, 5.0, np.nan]])
    np.testing.assert_array_equal(got, sel.dedup(rewards, [["p", "q", "p"], ["r", None, "r"]]))
    assert rewards[0, 2] == 3.0  # a new matrix; the input is left alone


def test_cells_of_two_rounds_are_one_set_keyed_by_prompt_and_column(tmp_path):
    fake_generate(tmp_path / "r1", PROMPTS, TEXTS)
    fake_generate(tmp_path / "r2", PROMPTS, {"a": ["later a"], "b": ["later b"]})
    cells = Cells([scan_generations(tmp_path / "r1")[0], scan_generations(tmp_path / "r2")[0]])
    assert cells.present.shape == (2, 4) and cells.num_tokens.tolist() == [[1, 2, 1, 2], [2, 0, 1, 2]]
    assert cells.hashes is None
    by_key = cells.by_key()
    assert len(by_key) == 8
    assert list(by_key) == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0), ("b", 1), ("b", 2), ("b", 3)]
    assert by_key["b", 3]["text"] == "later b" and by_key["b", 3]["sample_index"] == 0  # column 3 = round 2's 0
    assert by_key["a", 1]["text"] == "two words"
    for missing in [("c", 0), ("a", 4), ("a", -1)]:
        with pytest.raises(KeyError):
            by_key[missing]
    cells.close()


def test_a_cell_without_a_row_reads_as_none(run):
    index, _ = scan_generations(run)
    index.shard[0, 1] = NO_ROW  # as a prompt too long for the model leaves its cells
    assert index.row(0, 1) is None and index.row(0, 0)["text"] == "x"
    index.close()
