"""winnow.records: row types, JSONL reading with line numbers, and atomic writes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import refusal

import winnow
from winnow.errors import WinnowError
from winnow.records import (
    BOM,
    Completion,
    Prompt,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_npy,
    atomic_write_text,
    dir_mode,
    file_mode,
    honour_umask,
    parse_jsonl,
    read_json,
    read_jsonl,
    read_text,
    reward_to_json,
    sha256_file,
)

CHAT = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})


# ---------------------------------------------------------------- Prompt and Completion


def test_text_prompt_as_messages_row_and_content():
    p = Prompt(id="a", text="write a haiku")
    assert p.as_messages() == [{"role": "user", "content": "write a haiku"}]
    assert p.to_row() == {"id": "a", "prompt": "write a haiku"}
    assert p.content == "write a haiku"


def test_chat_prompt_as_messages_row_and_content():
    p = Prompt(id="b", messages=CHAT)
    assert p.as_messages() == list(CHAT)
    assert p.to_row() == {"id": "b", "messages": list(CHAT)}
    assert p.content == list(CHAT)


def test_chat_prompt_hands_out_copies():
    """Callers (chat templates, reward functions) may edit what they get; the prompt stays."""
    p = Prompt(id="b", messages=CHAT)
    p.as_messages()[0]["content"] = "changed"
    p.to_row()["messages"][1]["content"] = "changed"
    p.content[0]["role"] = "changed"
    assert p.messages == CHAT and CHAT[0] == {"role": "system", "content": "be brief"}


def test_completion_row_has_every_field():
    c = Completion(prompt_id="a", sample_index=3, model="m", text="hi", num_tokens=2, finish_reason="stop")
    assert c.to_row() == {
        "prompt_id": "a",
        "sample_index": 3,
        "model": "m",
        "text": "hi",
        "num_tokens": 2,
        "finish_reason": "stop",
    }


# ---------------------------------------------------------------- read_jsonl


def test_read_jsonl_numbers_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": "é"}\n\t\n{"c": [1]}\n', encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "é"}), (6, {"c": [1]})]


def test_read_jsonl_without_final_newline(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (2, {"b": 2})]


def test_read_jsonl_malformed_line_names_file_line_and_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"b" 2}\n')
    with pytest.raises(WinnowError) as e:
        list(read_jsonl(path))
    assert str(e.value) == f"{path}:2: malformed JSON: Expecting ':' delimiter (column 6)"


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ('"text"', "str"), ("3", "int"), ("null", "NoneType")])
def test_read_jsonl_non_object_names_its_type(tmp_path, line, kind):
    path = tmp_path / "rows.jsonl"
    path.write_text(f'{{"a": 1}}\n{line}\n')
    with pytest.raises(WinnowError) as e:
        list(read_jsonl(path))
    assert str(e.value) == f"{path}:2: expected a JSON object, got {kind}"


def test_read_jsonl_reads_utf8_under_an_ascii_locale(tmp_path):
    """Files are UTF-8 whatever the machine's locale: read one in a process whose locale
    encoding is ASCII (C locale, no coercion, no UTF-8 mode)."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes('{"t": "naïve café 日本"}\n'.encode())
    assert list(read_jsonl(path)) == [(1, {"t": "naïve café 日本"})]
    package_root = str(Path(winnow.__file__).resolve().parent.parent)  # this winnow, not another
    code = (
        "import locale, sys; sys.path.insert(0, sys.argv[1]); from winnow.records import read_jsonl; "
        "print(locale.getpreferredencoding(False), ascii(list(read_jsonl(sys.argv[2]))))"
    )
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0", PYTHONUTF8="0")
    proc = subprocess.run(
        [sys.executable, "-c", code, package_root, str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ANSI_X3.4-1968 " + ascii([(1, {"t": "naïve café 日本"})])


# ---------------------------------------------------------------- atomic writes


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_bytes_makes_folders_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(path, b"\x00\x01data")
    assert path.read_bytes() == b"\x00\x01data"
    atomic_write_bytes(path, b"new")  # replaces
    assert path.read_bytes() == b"new"
    assert _leftovers(path.parent) == []


def test_atomic_write_bytes_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write, after the temp file exists
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_bytes_interrupted_leaves_nothing_behind(tmp_path, monkeypatch):
    """A Ctrl-C during the rename (BaseException, not Exception) still removes the temp file."""
    path = tmp_path / "out.bin"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"data")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_interrupted_just_after_the_rename(tmp_path, monkeypatch):
    """A Ctrl-C that lands once the rename is done: the file is whole, and the interrupt (not
    a complaint about the temp file being gone) is what the caller sees."""
    path = tmp_path / "out.bin"
    real_replace = os.replace

    def rename_then_interrupt(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"data")
    assert path.read_bytes() == b"data" and list(tmp_path.iterdir()) == [path]


def test_atomic_write_bytes_temp_file_is_hidden_beside_the_target(tmp_path, monkeypatch):
    """The temp file lives in the target's folder (so the rename is atomic) and starts with a
    dot (so shard globs never see it)."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr("os.replace", spy)
    path = tmp_path / "shard-00001.jsonl"
    atomic_write_bytes(path, b"x")
    [(src, dst)] = seen
    assert dst == str(path)
    src_name = src.rsplit("/", 1)[1]
    assert src.startswith(f"{tmp_path}/") and src_name.startswith(".shard-00001.jsonl.") and src_name.endswith(".tmp")


def test_atomic_write_text_is_utf8(tmp_path):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "café 日本\n")
    assert path.read_bytes() == "café 日本\n".encode()


def test_atomic_write_jsonl_one_object_a_line_unicode_kept(tmp_path):
    path = tmp_path / "rows.jsonl"
    atomic_write_jsonl(path, iter([{"b": 1, "a": "é"}, {"x": None}]))
    assert path.read_text(encoding="utf-8") == '{"b": 1, "a": "é"}\n{"x": null}\n'
    atomic_write_jsonl(path, [])
    assert path.read_text() == ""


def test_atomic_write_json_is_sorted_indented_and_ends_with_newline(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"z": 1, "a": {"é": [1, 2]}})
    assert path.read_text(encoding="utf-8") == '{\n  "a": {\n    "é": [\n      1,\n      2\n    ]\n  },\n  "z": 1\n}\n'


def test_atomic_write_npy_round_trips(tmp_path):
    path = tmp_path / "r.npy"
    array = np.array([[0.5, np.nan], [-1.0, 2.0]])
    atomic_write_npy(path, array)
    loaded = np.load(path)
    assert loaded.dtype == np.float64 and loaded.shape == (2, 2)
    np.testing.assert_array_equal(loaded, array)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- reward_to_json


def test_reward_to_json():
    assert reward_to_json(math.nan) is None
    assert reward_to_json(np.float64("nan")) is None
    value = reward_to_json(np.float32(0.5))
    assert value == 0.5 and type(value) is float
    assert json.dumps([reward_to_json(-0.25), reward_to_json(float("nan"))]) == "[-0.25, null]"


# ---------------------------------------------------------------- UTF-8, BOM, JSON files, digests, modes


def test_parse_jsonl_bom_only_on_the_first_line_and_bad_utf8_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert list(parse_jsonl([BOM + b'{"a": 1}\n', b'{"b": 2}\n'], path)) == [(1, {"a": 1}), (2, {"b": 2})]
    with pytest.raises(WinnowError) as e:
        list(parse_jsonl([b'{"a": 1}\n', BOM + b'{"b": 2}\n'], path))
    assert str(e.value).startswith(f"{path}:2: malformed JSON")  # a BOM inside the file is not skipped
    with pytest.raises(WinnowError) as e:
        list(parse_jsonl([b'{"a": 1}\n', b'{"b": "\xff"}\n'], path))
    assert str(e.value) == f"{path}:2: not valid UTF-8 (byte 0xff at column 8)"


def test_read_text_and_read_json(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(BOM + '{"é": [1, 2]}'.encode())
    assert read_text(path) == '{"é": [1, 2]}' and read_json(path) == {"é": [1, 2]}
    path.write_bytes(b'{"a": 1,\n"b": 2,\n"c": "\xfe"}')
    assert refusal(read_text, path) == f"{path}:3: not valid UTF-8 (byte 0xfe)"
    path.write_text('{"a": 1,\n\n}')
    damaged = "damaged (not valid JSON: Expecting property name enclosed in double quotes at line 3)"
    assert refusal(read_json, path) == f"{path}: {damaged}"


def test_sha256_file_across_blocks(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * 9000 + b"tail"  # > 2 MiB: several 1 MiB blocks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_json_writers_refuse_nan(tmp_path):
    """NaN is not JSON: a writer must say so rather than write a file other tools reject."""
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "m.json", {"x": math.nan})
    with pytest.raises(ValueError):
        atomic_write_jsonl(tmp_path / "r.jsonl", [{"x": math.inf}])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_modes_follow_the_umask(tmp_path, umask_027):
    assert file_mode() == 0o640 and dir_mode() == 0o750
    assert os.umask(0o027) == 0o027  # reading it left it as it was
    path = tmp_path / "out.json"
    atomic_write_json(path, {})
    assert path.stat().st_mode & 0o777 == 0o640


def test_honour_umask_fixes_a_tree_made_private(tmp_path, umask_027):
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "w.safetensors").write_bytes(b"x")
    (folder / "sub" / "c.json").write_text("{}")
    for p in (folder, folder / "sub"):
        p.chmod(0o700)
    for p in (folder / "w.safetensors", folder / "sub" / "c.json"):
        p.chmod(0o600)
    honour_umask(folder)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}
    assert modes == {"ckpt": 0o750, "ckpt/sub": 0o750, "ckpt/w.safetensors": 0o640, "ckpt/sub/c.json": 0o640}


def test_modes_under_an_empty_umask():
    old = os.umask(0)
    try:
        assert (file_mode(), dir_mode()) == (0o666, 0o777)
    finally:
        os.umask(old)
