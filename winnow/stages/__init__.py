"""The pipeline stages over a run directory: generate -> score -> select (sft: ``winnow.sft``).

Each stage reads the previous stage's files, writes its own shards atomically, skips the
shards that are already there, and writes its manifest last. Rows are keyed by
(prompt_id, sample_index) throughout; matrices are indexed by the prompt order of
``generate/prompts.jsonl`` (rows) and sample_index (columns). A stage function is the
driver: it owns the stage folder and hands pending shards to an executor
(``winnow.executors``) with a worker that turns one shard's inputs into its rows.
"""

from winnow.rundir import load_generations, load_scored, load_selected
from winnow.stages.generate import generate, shard_seed
from winnow.stages.score import reward_matrix, score, summarize
from winnow.stages.select import select

__all__ = [
    "generate",
    "load_generations",
    "load_scored",
    "load_selected",
    "reward_matrix",
    "score",
    "select",
    "shard_seed",
    "summarize",
]
