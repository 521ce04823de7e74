"""Write winnow/data/constraints_prompts.jsonl: the constraints demo's prompts in IFEval's schema.

Each row: id, prompt, split (train | heldout), instruction_id_list, kwargs. Prompts pair a
topic with one or two instructions from several IFEval families (no instruction needs
langdetect). Held-out prompts use topics the training prompts do not. Deterministic:
rerunning writes the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASKS = [
    "Write a short note about {t}.",
    "Describe {t} to a friend.",
    "Give one tip about {t}.",
    "Tell me something interesting about {t}.",
]
TOPICS = (
    "gardening, the ocean, a bicycle, coffee, the moon, a library, rain, a train station, bread, "
    "a mountain, chess, winter, a museum, tea, a river, a city park, music, a lighthouse, paper, "
    "the desert, a bakery, birds, a bridge, snow, a farm, clocks, a forest, honey, stars, a market, "
    "a violin, the wind, a harbor, apples, a castle, thunder, a garden hose, pencils, a canoe, fog"
).split(", ")
HELDOUT_TOPICS = (
    "a volcano, owls, a kite, cheese, a subway, sunflowers, a glacier, a typewriter, bees, a lantern, "
    "a waterfall, pottery, a camel, a telescope"
).split(", ")


def families(topic: str, rng: random.Random) -> list[tuple[str, str, dict]]:
    """(instruction id, instruction sentence, kwargs) for one topic, one per family."""
    word = topic.split()[-1]
    limit = rng.choice([25, 30, 40])
    banned = rng.choice([["very", "really"], ["good", "nice"], ["thing", "stuff"]])
    return [
        ("keywords:existence", f"Include the word '{word}'.", {"keywords": [word]}),
        (
            "length_constraints:number_words",
            f"Answer in fewer than {limit} words.",
            {"num_words": limit, "relation": "less than"},
        ),
        ("punctuation:no_comma", "Do not use any commas.", {}),
        (
            "keywords:forbidden_words",
            f"Do not use the words '{banned[0]}' or '{banned[1]}'.",
            {"forbidden_words": banned},
        ),
        ("detectable_format:title", "Start with a title wrapped in double angular brackets, like <<my title>>.", {}),
        ("startend:quotation", "Wrap your whole answer in double quotation marks.", {}),
        (
            "detectable_content:postscript",
            "End with a postscript starting with P.S.",
            {"postscript_marker": "P.S."},
        ),
    ]


def rows(topics: list[str], split: str, count: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(count):
        topic = topics[i % len(topics)]
        options = families(topic, rng)
        # the families in turn, so each split mixes them evenly; every third prompt has two
        picked = [options[i % len(options)]]
        if i % 3 == 2:
            other = options[(i + 3) % len(options)]
            picked.append(other)
        task = TASKS[(i // len(options)) % len(TASKS)].format(t=topic)
        out.append(
            {
                "id": f"{split}-{i:03d}",
                "prompt": " ".join([task, *(sentence for _, sentence, _ in picked)]),
                "split": split,
                "instruction_id_list": [iid for iid, _, _ in picked],
                "kwargs": [kw for _, _, kw in picked],
            }
        )
    return out


def main() -> None:
    rng = random.Random(0)
    data = rows(TOPICS, "train", 105, rng) + rows(HELDOUT_TOPICS, "heldout", 42, rng)
    path = Path(__file__).resolve().parent.parent / "winnow" / "data" / "constraints_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    print(f"{path}: {len(data)} prompts")


if __name__ == "__main__":
    main()
