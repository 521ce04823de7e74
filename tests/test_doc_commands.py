"""The ``winnow ...`` commands written in README.md and docs/ run as written, on tiny models.

Each command is taken from the fenced bash blocks, in document order, in one working
folder: ``smollm2`` becomes the tiny policy, ``path/to/rm`` the tiny reward model,
``path/to/prm`` the tiny process reward model, and
``vader`` the ``length`` reward (VADER scores a tiny model's noise 0 throughout: no pairs). Commands
that need what a test machine lacks are skipped by an explicit rule with its reason, and
the skip list is asserted, so a new example is either run or named here.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import write_jsonl
from serving import scripted_judge

from winnow.cli import main

ROOT = Path(__file__).resolve().parent.parent
STAGE_COMMANDS = ("generate", "score", "select", "sft", "dpo")
SKIP = {
    "...": "an elided command line, not a full command",
    " serve ": "a long-running server (tests/serve/test_serve_cli.py starts it)",
    "--backend vllm": "vLLM is not installed in the test environment (tests/generate/test_vllm.py)",
    "--backend openai": "needs a running server (tests/generate/test_openai_api.py)",
    "--reward-judge": "needs a judge server (tests/rewards/test_judge.py)",
    "--executor ray": "a Ray cluster (tests/executors/test_ray.py)",
    "winnow demo": "the real SmolLM2 demo (tests/test_demo_slow.py)",
    "--config": "needs the user's YAML file",
    "--push-to-hub": "uploads to the Hugging Face Hub: a network and a token (tests/test_export.py checks the folder)",
    "$": "uses shell variables",
    "runs/demo/": "reads the checkpoint of a finished `winnow demo` (tests/test_demo_slow.py)",
    "--strategy passing": "a tiny random model seldom passes a verifier, leaving nothing to fine-tune on "
    "(tests/test_adaptive.py runs adaptive sampling with a scripted reward)",
}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def commands(path: Path) -> list[str]:
    """Every ``winnow`` command line in the bash blocks of ``path`` (continuations joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("winnow "):
                out.append(shlex.join(shlex.split(line, comments=True)))  # comments may say "..."
    return out


OFFLINE = ("winnow batch-requests ",)
"""Commands that name a server but never contact it (they write its requests to a file)."""


def skip_reason(command: str) -> str | None:
    skips = {key: why for key, why in SKIP.items() if not (command.startswith(OFFLINE) and key == "--backend openai")}
    return next((why for key, why in skips.items() if key in f" {command} "), None)


REWARDS = "def score(prompts, completions, **kw):\n    return [float(len(c)) for c in completions]\n"

# Prompts files the docs name, in the schema each page describes (a reference answer, IFEval's
# instructions, HumanEval's tests), and completions made elsewhere for `winnow import`.
FILES = {
    "gsm.jsonl": [{"id": f"g{i}", "prompt": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(3)],
    "ifeval.jsonl": [
        {
            "id": "i0",
            "prompt": "Answer without commas.",
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{}],
        }
    ],
    "humaneval.jsonl": [
        {
            "id": "h0",
            "prompt": "def add(a, b):\n",
            "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
            "entry_point": "add",
        }
    ],
    "heldout.jsonl": [{"id": f"h{i}", "prompt": f"say something new about {i}"} for i in range(3)],
    "mmlu.jsonl": [{"id": "m0", "prompt": "Which is a colour? (A) dog (B) red", "gold": "B"}],
    "evals.jsonl": [{"id": "e0", "question": "What is 2 + 2?", "answer": "2 + 2 is 4, so the answer is 4."}],
    "responses.jsonl": [{"prompt_id": f"p{i}", "text": f"about {i}, twice: {j}"} for i in range(3) for j in range(2)],
}
MADE_FOR = {
    "runs/math": "gsm.jsonl",
    "runs/if1": "ifeval.jsonl",
    "runs/he": "humaneval.jsonl",
    "runs/mmlu": "mmlu.jsonl",
    "runs/other": "prompts.jsonl",
}
"""Run dirs a page scores or reports without showing the generate that made them: a tiny
generate (and a length-scored one for a report) from the prompts file of their schema."""


DOCS_JUDGE = "http://localhost:8000/v1"
"""The judge server the docs name: a scripted one stands in for it."""


@pytest.fixture
def judge_url():
    """A judge that finds every answer equivalent and picks the first candidate of a window."""
    with scripted_judge(lambda content: "[[1]]" if "Candidate 1:" in content else "yes") as judge:
        yield judge.url


@pytest.mark.docs
def test_documented_commands_run_as_written(tmp_path, tiny_policy, tiny_reward_model, tiny_prm, monkeypatch, judge_url):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"say something about {i}"} for i in range(3)])
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    for name, rows in FILES.items():
        write_jsonl(tmp_path / name, rows)
    vision_files(tmp_path)
    ran, skipped, skipped_dirs = [], [], set()
    for path in doc_files():
        for command in commands(path):
            if command.startswith("winnow generate ... "):  # the options shown after the usual three
                command = command.replace("...", f"--prompts prompts.jsonl --run-dir runs/g{len(ran)} --model smollm2")
            if command in ran:  # a page repeating another's example: run once
                continue
            words = shlex.split(command)
            run_dir = words[words.index("--run-dir") + 1] if "--run-dir" in words else None
            if run_dir is None and words[1] in ("report", "verify"):
                run_dir = words[2]
            if run_dir in MADE_FOR and not Path(run_dir).exists():
                made = ["--prompts", MADE_FOR[run_dir], "--run-dir", run_dir, "--model", str(tiny_policy)]
                assert main(["generate", *made, "--n", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
                if words[1] == "report":
                    assert main(["score", "--run-dir", run_dir, "--reward-fn", "length"]) == 0
            if skip_reason(command) or (run_dir and run_dir in skipped_dirs):  # or it reads what a skipped one made
                skipped.append(command)
                skipped_dirs.add(run_dir)
                continue
            swap = {
                "smollm2": str(tiny_policy),
                "path/to/rm": str(tiny_reward_model),
                "path/to/prm": str(tiny_prm),
                "vader": "length",
                DOCS_JUDGE: judge_url,
            }
            # a tiny random model never ends a completion: --drop-truncated would leave nothing
            argv = [swap.get(a, a) for a in shlex.split(command)[1:] if a != "--drop-truncated"]
            argv = fresh_copy_for_alternatives(argv)
            code = main(argv)
            assert code == 0, f"{path.name}: `{command}` exited {code}"
            ran.append(command)
    assert len(ran) >= 10, ran
    assert len(skipped) <= len(ran), skipped


def vision_files(folder: Path) -> None:
    """What docs/howto/images.md works on: the tiny VLM its first command builds
    (``tiny-vlm``), a reward model that reads images (``tiny-vision-rm``), a prompts file naming two pictures, and the reward it shows."""
    from tiny_vlm import build_vision_rm, build_vlm, tiny_image

    build_vlm(folder / "tiny-vlm", "llava")
    build_vision_rm(folder / "tiny-vision-rm")
    (folder / "photos").mkdir()
    for i, name in enumerate(("cat.png", "street.jpg")):
        (folder / "photos" / name).write_bytes(tiny_image(i, fmt="PNG" if name.endswith("png") else "JPEG"))
    ask = [{"type": "image"}, {"type": "text", "text": "What colour dominates this picture?"}]
    rows = [
        {"id": "q1", "messages": [{"role": "user", "content": ask}], "images": ["photos/cat.png"]},
        {"id": "q2", "prompt": "Describe this picture in one sentence.", "images": ["photos/street.jpg"]},
    ]
    write_jsonl(folder / "vqa.jsonl", rows)
    page = (ROOT / "docs/howto/images.md").read_text()
    (folder / "my_vision_rewards.py").write_text(re.findall(r"```python\n(import numpy.*?)```", page, flags=re.S)[0])


def fresh_copy_for_alternatives(argv: list[str]) -> list[str]:
    """Docs show alternatives on one run dir (``score`` with a reward model, then with prefix
    sharing off): an alternative runs on a copy of the run dir without that stage."""
    if argv[0] not in STAGE_COMMANDS or "--run-dir" not in argv:
        return argv
    i = argv.index("--run-dir") + 1
    run = Path(argv[i])
    if not (run / argv[0]).exists():
        return argv
    n = 2
    while Path(f"{run}-alt{n}").exists():
        n += 1
    copy = Path(f"{run}-alt{n}")
    shutil.copytree(run, copy)
    for stage in STAGE_COMMANDS[STAGE_COMMANDS.index(argv[0]) :]:
        shutil.rmtree(copy / stage, ignore_errors=True)
    return [*argv[:i], str(copy), *argv[i + 1 :]]


def test_commands_are_found_and_skips_are_named():
    found = [c for path in doc_files() for c in commands(path)]
    assert any(c.startswith("winnow generate") for c in found)
    for command in found:
        reason = skip_reason(command)
        assert reason is None or reason in SKIP.values()
