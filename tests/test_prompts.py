"""winnow.prompts.load_prompts: JSONL rows, ids, and errors that name file, line and field."""

import json
import re

import pytest

from winnow.errors import WinnowError
from winnow.prompts import load_prompts
from winnow.records import Prompt


def _jsonl(path, rows):
    """Write rows (dicts, or raw strings written as-is) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _at(path, line, field=None):
    """The location prefix an error must start with, e.g. 'prompts.jsonl:3: field 'id''."""
    text = f"{path}:{line}"
    if field is not None:
        text += f": field '{field}'"
    return re.escape(text)


# ---------------------------------------------------------------- JSONL rows


def test_text_and_messages_rows(tmp_path):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "write a haiku"},
            {"id": "b", "messages": chat},
        ],
    )
    prompts = load_prompts(path)
    assert prompts == [
        Prompt(id="a", text="write a haiku"),
        Prompt(id="b", messages=({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})),
    ]
    assert prompts[0].as_messages() == [{"role": "user", "content": "write a haiku"}]
    assert prompts[1].as_messages() == chat


def test_blank_lines_are_skipped(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, "", "   ", {"id": "b", "prompt": "y"}])
    assert [p.id for p in load_prompts(path)] == ["a", "b"]


def test_missing_ids_are_row_index_and_stable(tmp_path):
    rows = [{"prompt": "first"}, {"id": "x", "prompt": "second"}, {"prompt": "third"}]
    path = _jsonl(tmp_path / "p.jsonl", rows)
    ids = [p.id for p in load_prompts(path)]
    assert ids == ["row-0", "x", "row-2"]
    assert [p.id for p in load_prompts(path)] == ids  # same file, same ids
    # Appending rows does not renumber the earlier ones.
    _jsonl(path, rows + [{"prompt": "fourth"}])
    assert [p.id for p in load_prompts(path)] == ["row-0", "x", "row-2", "row-3"]


def test_integer_ids_become_strings(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": 7, "prompt": "a"}, {"id": 0, "prompt": "b"}])
    assert [p.id for p in load_prompts(path)] == ["7", "0"]


def test_custom_columns(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"qid": "q1", "question": "why?"}])
    assert load_prompts(path, prompt_column="question", id_column="qid") == [Prompt(id="q1", text="why?")]


# ---------------------------------------------------------------- JSONL errors


def test_duplicate_id_names_file_line_and_field(tmp_path):
    path = _jsonl(
        tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"}]
    )
    with pytest.raises(WinnowError, match=_at(path, 3, "id") + r": duplicate id 'a' \(first seen on line 1\)"):
        load_prompts(path)


def test_integer_and_string_id_collide(tmp_path):
    # Both become "7" downstream, so they must not silently merge.
    path = _jsonl(tmp_path / "p.jsonl", [{"id": 7, "prompt": "x"}, {"id": "7", "prompt": "y"}])
    with pytest.raises(WinnowError, match=_at(path, 2, "id") + ": duplicate id '7'"):
        load_prompts(path)


def test_explicit_id_colliding_with_generated_id(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}, {"id": "row-0", "prompt": "y"}])
    with pytest.raises(WinnowError, match=_at(path, 2, "id") + ": duplicate id 'row-0'"):
        load_prompts(path)


@pytest.mark.parametrize("bad_id", [1.5, True, "", ["a"]])
def test_bad_id_type(tmp_path, bad_id):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": bad_id, "prompt": "x"}])
    with pytest.raises(WinnowError, match=_at(path, 1, "id")):
        load_prompts(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, '{"prompt": "broken"'])
    with pytest.raises(WinnowError, match=_at(path, 2) + ": malformed JSON"):
        load_prompts(path)


def test_missing_prompt_names_file_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "text": "y"}])
    with pytest.raises(WinnowError, match=_at(path, 2, "prompt") + ": missing prompt"):
        load_prompts(path)


def test_missing_custom_prompt_column_names_that_column(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    with pytest.raises(WinnowError, match=_at(path, 1, "question") + ": missing prompt"):
        load_prompts(path, prompt_column="question")


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_prompt_names_file_line_and_field(tmp_path, text):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, "", {"prompt": text}])
    with pytest.raises(WinnowError, match=_at(path, 3, "prompt") + ": prompt is empty"):
        load_prompts(path)


def test_non_string_prompt(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": 42}])
    with pytest.raises(WinnowError, match=_at(path, 1, "prompt") + ": expected a string, got int"):
        load_prompts(path)


def test_empty_messages_list(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "messages": []}])
    with pytest.raises(WinnowError, match=_at(path, 1, "messages") + ": expected a non-empty list"):
        load_prompts(path)


def test_malformed_message(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "user"}]}])
    with pytest.raises(WinnowError, match=_at(path, 1, "messages[1]")):
        load_prompts(path)


def test_all_messages_empty(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "  "}]}])
    with pytest.raises(WinnowError, match=_at(path, 1, "messages") + ": all messages are empty"):
        load_prompts(path)


@pytest.mark.parametrize("row", ['["a", "b"]', '"just a string"', "3"])
def test_non_object_row(tmp_path, row):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}, row])
    with pytest.raises(WinnowError, match=_at(path, 2) + ": expected a JSON object"):
        load_prompts(path)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(WinnowError, match="does not exist: " + re.escape(str(path))):
        load_prompts(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(WinnowError, match=re.escape(str(path)) + ": no prompts found"):
        load_prompts(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("hello\n")
    with pytest.raises(WinnowError, match="unknown prompts format"):
        load_prompts(path)


# ---------------------------------------------------------------- datasets formats


@pytest.fixture
def datasets_lib(tmp_path, monkeypatch):
    """The `datasets` module with its cache in tmp_path (load_dataset writes Arrow files there)."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return datasets


def test_parquet_with_prompt_column(tmp_path, datasets_lib):
    path = tmp_path / "prompts.parquet"
    datasets_lib.Dataset.from_dict({"id": [10, 11, 12], "question": ["a?", "b?", "c?"]}).to_parquet(str(path))
    prompts = load_prompts(path, prompt_column="question")
    assert prompts == [Prompt(id="10", text="a?"), Prompt(id="11", text="b?"), Prompt(id="12", text="c?")]


def test_parquet_errors_name_the_row(tmp_path, datasets_lib):
    path = tmp_path / "prompts.parquet"
    datasets_lib.Dataset.from_dict({"question": ["a?", "   "]}).to_parquet(str(path))
    # The default column 'prompt' is absent: row 1 is named.
    with pytest.raises(WinnowError, match=_at(path, 1, "prompt") + ": missing prompt"):
        load_prompts(path)
    with pytest.raises(WinnowError, match=_at(path, 2, "question") + ": prompt is empty"):
        load_prompts(path, prompt_column="question")


def test_save_to_disk_folder_with_messages_and_no_ids(tmp_path, datasets_lib):
    folder = tmp_path / "saved"
    datasets_lib.Dataset.from_list(
        [
            {"question": None, "messages": [{"role": "user", "content": "hi"}]},
            {"question": "what?", "messages": None},
        ]
    ).save_to_disk(str(folder))
    prompts = load_prompts(folder, prompt_column="question")
    assert prompts == [
        Prompt(id="row-0", messages=({"role": "user", "content": "hi"},)),
        Prompt(id="row-1", text="what?"),
    ]


def test_save_to_disk_dataset_dict_split(tmp_path, datasets_lib):
    folder = tmp_path / "saved"
    datasets_lib.DatasetDict(
        {
            "train": datasets_lib.Dataset.from_dict({"id": ["t1"], "question": ["train q"]}),
            "test": datasets_lib.Dataset.from_dict({"id": ["e1", "e2"], "question": ["test q1", "test q2"]}),
        }
    ).save_to_disk(str(folder))
    assert [p.id for p in load_prompts(folder, prompt_column="question")] == ["t1"]  # 'train' by default
    assert [p.text for p in load_prompts(folder, prompt_column="question", split="test")] == ["test q1", "test q2"]
    with pytest.raises(WinnowError, match=r"no split 'dev'"):
        load_prompts(folder, prompt_column="question", split="dev")
