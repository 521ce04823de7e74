"""``executor``: where generate and score make their shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, get_args

from winnow.config.fields import Executor, bounded, check_fields

EXECUTORS = get_args(Executor)
"""Every executor name: the one list (``winnow.executors.run_shards`` dispatches on it)."""


@dataclass
class ExecutorConfig:
    """Where generate and score make their shards. It changes how fast, never what: it is
    not part of any stage's config (a stage may be resumed under another executor), and
    the manifest records it apart (``executor``: name, workers, retries)."""

    section: ClassVar[str] = "executor"

    name: Executor = field(default="local", metadata={"noun": "executor"})
    """``local`` (this process, shards in order, the first error stops the stage) or
    ``ray`` (a pool of Ray actors; a shard that fails is retried on another actor)."""
    ray_address: str | None = None
    """Ray: unset starts a local Ray instance; ``auto`` joins the cluster this machine
    belongs to (``ray start``); or the head's ``host:port``."""
    workers: int = bounded(2, ge=1)
    """Ray: actors in the pool; each loads its model (or reward) once."""
    cpus_per_worker: float = bounded(1.0, ge=0)
    """Ray: CPUs reserved per actor (fractions allowed)."""
    gpus_per_worker: float = bounded(0.0, ge=0)
    """Ray: GPUs reserved per actor (fractions share a GPU; several give one vLLM engine
    with tensor parallelism the GPUs of a node)."""
    retries: int = bounded(2, ge=0)
    """Ray: further tries of a shard after a failure (a lost worker or an error), each on
    another actor where there is one; a shard failing them all is reported by name."""

    def validate(self) -> None:
        check_fields(self)

    def share(self) -> int:
        """Worker processes that make shards at once, each with its own API rate limits
        (``winnow.budget.per_worker`` gives each its share): 1 here, ``workers`` under Ray."""
        return 1 if self.name == "local" else self.workers
