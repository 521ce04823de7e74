"""winnow.config: validation names the field, layering order, YAML errors, config hashes."""

import hashlib
import re
from dataclasses import asdict

import pytest

from winnow.config import GenerateConfig, SelectConfig
from winnow.errors import WinnowError
from winnow.generate.contract import sampling_of
from winnow.records import config_hash
from winnow.settings import build, load_yaml

# ---------------------------------------------------------------- GenerateConfig


def test_defaults_are_valid():
    GenerateConfig().validate()
    SelectConfig().validate()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n", 0, "generate.n: must be between 1 and 10000, got 0"),
        ("temperature", -0.1, "generate.temperature: must be 0 (greedy) or a number between 1e-05 and 100, got -0.1"),
        ("top_p", 0.0, "generate.top_p: must be in (0, 1], got 0.0"),
        ("top_p", 1.5, "generate.top_p: must be in (0, 1], got 1.5"),
        ("backend", "tgi", "generate.backend: unknown backend 'tgi'"),
        ("dtype", "fp8", "generate.dtype: must be one of auto, float32, bfloat16, float16, got 'fp8'"),
        ("gpu_memory_utilization", 0.5, "generate.gpu_memory_utilization: only the vllm backend takes it (got 0.5)"),
        ("max_model_len", 512, "generate.max_model_len: only the vllm backend takes it (got 512)"),
        ("tensor_parallel_size", 2, "generate.tensor_parallel_size: only the vllm backend takes it (got 2)"),
        ("long_prompts", "truncate", "generate.long_prompts: must be one of"),
        ("models", [], "generate.models"),
        ("max_new_tokens", 0, "generate.max_new_tokens"),
    ],
)
def test_generate_config_errors_name_the_field(field, value, message):
    with pytest.raises(WinnowError, match=re.escape(message)):
        GenerateConfig(**{field: value}).validate()


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("top_p", 1.0), ("long_prompts", "skip"), ("n", 1)])
def test_generate_config_boundaries_are_allowed(field, value):
    GenerateConfig(**{field: value}).validate()


# ---------------------------------------------------------------- SelectConfig


def test_select_unknown_strategy():
    with pytest.raises(WinnowError, match=r"select\.strategy: unknown strategy 'best'"):
        SelectConfig(strategy="best").validate()


@pytest.mark.parametrize("strategy", ["top_k_overall", "top_k_per_prompt", "random_k_overall"])
def test_select_k_strategies_need_k(strategy):
    with pytest.raises(WinnowError, match=rf"select\.k: strategy {strategy} needs k"):
        SelectConfig(strategy=strategy).validate()
    with pytest.raises(WinnowError, match=r"select\.k: must be >= 1, got 0"):
        SelectConfig(strategy=strategy, k=0).validate()
    SelectConfig(strategy=strategy, k=1).validate()


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_select_threshold_needs_a_finite_threshold(value):
    with pytest.raises(WinnowError, match=r"select\.threshold"):
        SelectConfig(strategy="threshold", threshold=value).validate()


def test_select_threshold_zero_is_a_threshold():
    SelectConfig(strategy="threshold", threshold=0.0).validate()


def test_k_is_not_needed_by_top_per_prompt():
    SelectConfig(strategy="top_per_prompt", k=None).validate()


# ---------------------------------------------------------------- build


def test_build_layers_defaults_then_yaml_then_flags():
    yaml_layer = {"n": 4, "temperature": 0.5, "seed": 3}
    flags = {"temperature": 0.9, "top_p": None, "seed": None}  # None: flag not given
    config = build(GenerateConfig, yaml_layer, flags)
    assert config.n == 4  # from YAML
    assert config.temperature == 0.9  # flag beats YAML
    assert config.seed == 3  # YAML kept: the flag was None
    assert config.top_p == 1.0  # default: neither layer gave it
    assert config.max_new_tokens == GenerateConfig().max_new_tokens


def test_build_missing_section_is_an_empty_layer():
    assert build(SelectConfig, None, {"strategy": "top_k_overall", "k": 5}) == SelectConfig(
        strategy="top_k_overall", k=5
    )


def test_build_validates():
    with pytest.raises(WinnowError, match=r"generate\.n"):
        build(GenerateConfig, {"n": 4}, {"n": 0})


def test_build_unknown_key_names_source_and_key():
    with pytest.raises(WinnowError, match=r"cfg\.yaml: field 'tempreature': unknown option for GenerateConfig"):
        build(GenerateConfig, {"tempreature": 0.7}, source="cfg.yaml")


def test_build_wrong_type_is_a_winnow_error():
    with pytest.raises(WinnowError, match=r"cfg\.yaml: field 'n': expected int, got '8'"):
        build(GenerateConfig, {"n": "8"}, source="cfg.yaml")


# ---------------------------------------------------------------- load_yaml


def test_load_yaml_reads_sections(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("prompts: p.jsonl\nrun_dir: runs/x\ngenerate:\n  n: 4\nselect:\n  strategy: threshold\n")
    assert load_yaml(path) == {
        "prompts": str(tmp_path / "p.jsonl"),  # relative to the YAML file
        "run_dir": "runs/x",
        "generate": {"n": 4},
        "select": {"strategy": "threshold"},
    }


def test_load_yaml_empty_file_is_empty_config(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("# nothing yet\n")
    assert load_yaml(path) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "generate:\n  n: 4\ngenrate:\n  n: 8\n", "field 'genrate': unknown key", id="unknown-top-level-key"
        ),
        pytest.param("generate: [1, 2\n", "invalid YAML", id="invalid-yaml"),
        pytest.param("- generate\n- select\n", "expected a mapping", id="top-level-must-be-mapping"),
    ],
)
def test_load_yaml_refuses_naming_the_file(tmp_path, text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(WinnowError, match=re.escape(f"{path}: {message}")):
        load_yaml(path)


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(WinnowError, match="config file does not exist"):
        load_yaml(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- config_hash


def test_config_hash_is_sha256_of_canonical_json():
    # Keys sorted, no spaces: the same bytes in every process (no dependence on hash seeds).
    expected = hashlib.sha256(b'{"a":1,"b":[1,2],"c":{"x":null,"y":"z"}}').hexdigest()[:16]
    assert config_hash({"a": 1, "b": [1, 2], "c": {"x": None, "y": "z"}}) == expected


def test_config_hash_ignores_key_order_at_every_level():
    a = {"generate": {"n": 4, "seed": 0}, "prompts_hash": "abc"}
    b = {"prompts_hash": "abc", "generate": {"seed": 0, "n": 4}}
    assert config_hash(a) == config_hash(b)


def test_config_hash_changes_with_any_value():
    base = config_hash(asdict(GenerateConfig()))
    assert config_hash(GenerateConfig()) == base  # a dataclass hashes as its dict
    assert config_hash(GenerateConfig(seed=1)) != base
    assert config_hash(GenerateConfig(top_p=0.9)) != base
    assert config_hash([1, 2]) != config_hash([2, 1])  # list order is meaningful


def test_a_backend_refuses_by_name_the_sampling_fields_it_cannot_honour(monkeypatch):
    from winnow import generate

    monkeypatch.setitem(generate.BACKENDS, "hf", frozenset({"min_p"}))
    sampling_of(GenerateConfig(min_p=0.1))  # honoured: accepted
    with pytest.raises(WinnowError, match=r"generate.stop: backend 'hf' does not support stop \(got \('###',\)\)"):
        sampling_of(GenerateConfig(stop=["###"]))
    with pytest.raises(WinnowError, match=r"generate\.repetition_penalty: backend 'hf' does not support"):
        sampling_of(GenerateConfig(repetition_penalty=1.3))
    sampling_of(GenerateConfig(repetition_penalty=1.0, stop=[]))  # neutral values are not "asked for"


def test_vllm_engine_options_are_accepted_for_vllm_and_checked():
    config = GenerateConfig(backend="vllm", gpu_memory_utilization=0.12, max_model_len=512, tensor_parallel_size=2)
    config.validate()
    assert config.engine() == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.12, "max_model_len": 512}
    with pytest.raises(WinnowError, match=re.escape("generate.gpu_memory_utilization: must be in (0, 1], got 1.5")):
        GenerateConfig(backend="vllm", gpu_memory_utilization=1.5).validate()


def test_every_backend_honours_the_whole_sampling_contract():
    from winnow.generate import BACKENDS, OPTIONAL_SAMPLING

    for backend in ("hf", "vllm"):
        assert BACKENDS[backend] == set(OPTIONAL_SAMPLING)
        GenerateConfig(backend=backend, min_p=0.05, repetition_penalty=1.2, stop=["\n\n"]).validate()


def test_dtype_fields_of_score_and_sft():
    from winnow.config import ScoreConfig, TrainConfig

    ScoreConfig(dtype="bfloat16").validate()
    TrainConfig(dtype="float16").validate()
    with pytest.raises(WinnowError, match=r"score\.dtype: must be one of"):
        ScoreConfig(dtype="half").validate()
    with pytest.raises(WinnowError, match=r"sft\.dtype: must be one of"):
        TrainConfig(dtype="half").validate()
