"""winnow.prompts: the exact message of every bad prompt row, and the shapes good rows take."""

from __future__ import annotations

import json

import pytest

from winnow.errors import WinnowError
from winnow.prompts import load_prompts
from winnow.records import Prompt


def jsonl(tmp_path, *rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def error_of(path, **kw) -> str:
    with pytest.raises(WinnowError) as e:
        load_prompts(path, **kw)
    return str(e.value)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": True, "prompt": "x"}, "field 'id': id must be a non-empty string or integer, got True"),
        ({"id": 1.5, "prompt": "x"}, "field 'id': id must be a non-empty string or integer, got 1.5"),
        ({"id": "", "prompt": "x"}, "field 'id': id must be a non-empty string or integer, got ''"),
        ({"id": [1], "prompt": "x"}, "field 'id': id must be a non-empty string or integer, got [1]"),
        (
            {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
            "both 'prompt' and 'messages' given; a row holds one or the other",
        ),
        ({"prompt": 3}, "field 'prompt': expected a string, got int"),
        ({"prompt": " \t\n"}, "field 'prompt': prompt is empty"),
        ({"prompt": None}, "field 'prompt': missing prompt (need 'prompt' or 'messages')"),
        ({"id": "a"}, "field 'prompt': missing prompt (need 'prompt' or 'messages')"),
        ({"messages": []}, "field 'messages': expected a non-empty list of messages"),
        ({"messages": "hi"}, "field 'messages': expected a non-empty list of messages"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user"}]},
            "field 'messages[1]': expected {'role': str, 'content': str or list of parts}",
        ),
        (
            {"messages": [{"role": 1, "content": "a"}]},
            "field 'messages[0]': expected {'role': str, 'content': str or list of parts}",
        ),
        ({"messages": ["hi"]}, "field 'messages[0]': expected {'role': str, 'content': str or list of parts}"),
        (
            {"messages": [{"role": "bot", "content": "a"}]},
            "field 'messages[0]': unknown role 'bot' (use system, user, assistant)",
        ),
        (
            {"messages": [{"role": "user", "content": "a", "z": 1, "name": "n"}]},
            "field 'messages[0]': unknown key 'name' (a message has role and content)",
        ),
        (
            {"messages": [{"role": "system", "content": " "}, {"role": "user", "content": ""}]},
            "field 'messages': all messages are empty",
        ),
    ],
)
def test_bad_row_message(tmp_path, row, message):
    path = jsonl(tmp_path, {"id": "ok", "prompt": "fine"}, "", row)
    assert error_of(path) == f"{path}:3: {message}"  # line 3: the blank line counts


def test_file_level_messages(tmp_path):
    missing = tmp_path / "none.jsonl"
    assert error_of(missing) == f"prompts file does not exist: {missing}"
    empty = jsonl(tmp_path, "", "  ")
    assert error_of(empty) == f"{empty}: no prompts found"
    other = tmp_path / "p.txt"
    other.write_text("hello\n")
    assert error_of(other) == f"{other}: unknown prompts format (use .jsonl, .json, .parquet or a dataset folder)"
    broken = tmp_path / "p.parquet"
    broken.write_bytes(b"not parquet")
    assert error_of(broken).startswith(f"{broken}: could not read as a dataset: ")
    dup = jsonl(tmp_path, {"id": "a", "prompt": "x"}, "", {"id": "b", "prompt": "y"}, {"id": "a", "prompt": "z"})
    assert error_of(dup) == f"{dup}:4: field 'id': duplicate id 'a' (first seen on line 1)"
    custom = jsonl(tmp_path, {"q": "x"}, name="c.jsonl")
    assert error_of(custom, prompt_column="question") == (
        f"{custom}:1: field 'question': missing prompt (need 'question' or 'messages')"
    )
    assert error_of(
        jsonl(tmp_path, {"key": 1, "prompt": "x"}, {"key": "1", "prompt": "y"}, name="k.jsonl"), id_column="key"
    ).endswith(":2: field 'key': duplicate id '1' (first seen on line 1)")


def test_good_rows(tmp_path):
    path = jsonl(
        tmp_path,
        {"prompt": "first"},
        "",
        {"id": 0, "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}]},
        {"prompt": None, "messages": [{"role": "user", "content": "m"}]},
        {"id": "x", "prompt": "  padded  "},
    )
    assert load_prompts(path) == [
        Prompt(id="row-0", text="first"),
        Prompt(id="0", messages=({"role": "system", "content": ""}, {"role": "user", "content": "hi"})),
        Prompt(id="row-2", messages=({"role": "user", "content": "m"},)),  # ids count rows, not lines
        Prompt(id="x", text="  padded  "),
    ]
    # prompt_column "messages": a row's messages are its prompt, never text
    chat = jsonl(tmp_path, {"messages": [{"role": "user", "content": "q"}]}, name="m.jsonl")
    assert load_prompts(chat, prompt_column="messages") == [
        Prompt(id="row-0", messages=({"role": "user", "content": "q"},))
    ]


# ---------------------------------------------------------------- datasets: .json files and splits


def test_json_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"prompt": "y"}]))
    assert load_prompts(path) == [Prompt(id="a", text="x"), Prompt(id="row-1", text="y")]


def test_dataset_dict_split_choice(tmp_path):
    datasets = pytest.importorskip("datasets")

    def saved(name, **splits):
        folder = tmp_path / name
        datasets.DatasetDict(
            {s: datasets.Dataset.from_list([{"prompt": f"{s} {i}"} for i in range(n)]) for s, n in splits.items()}
        ).save_to_disk(str(folder))
        return folder

    both = saved("both", test=1, train=2)
    assert [p.text for p in load_prompts(both)] == ["train 0", "train 1"]  # train by default, wherever it is
    assert [p.text for p in load_prompts(both, split="test")] == ["test 0"]
    no_train = saved("no_train", validation=1, test=2)
    assert [p.text for p in load_prompts(no_train)] == ["validation 0"]  # else the first split
    assert error_of(no_train, split="dev") == f"{no_train}: no split 'dev' (have ['test', 'validation'])"
