"""Every validated config field at its boundary: the last good value passes, the first bad
one fails with its exact message (section.field: what is wrong)."""

from __future__ import annotations

import math

import pytest
import yaml
from helpers import refusal

from winnow.config import (
    AdaptiveConfig,
    DpoConfig,
    GenerateConfig,
    RoundsConfig,
    ScoreConfig,
    SelectConfig,
    ServeConfig,
    TrainConfig,
)
from winnow.errors import WinnowError
from winnow.generate.contract import sampling_of
from winnow.remote import generate_client, upstream_client
from winnow.settings import build, load_yaml

inf, nan = math.inf, math.nan
OPENAI = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}
SEED_MSG = "must be between 0 and 2**63 - 1, got {}"
DTYPE_MSG = "must be one of auto, float32, bfloat16, float16, got {!r}"
DEVICE_MSG = "must be auto, cpu, mps, cuda or cuda:N, got {!r}"
TEMPERATURE_MSG = "must be 0 (greedy) or a number between 1e-05 and 100, got {}"


def gen(**kw):
    return GenerateConfig(**{"models": ["m"], **kw})


def judge(**kw):
    return ScoreConfig(**{"reward_judge": "http://j/v1", "judge_model": "j", **kw})


# (config, exact message) pairs that must fail
BAD = [
    (GenerateConfig(models=[]), "generate.models: at least one model"),
    (gen(backend="openai"), "generate.base_url: backend 'openai' needs the server's URL (--base-url)"),
    (gen(**OPENAI, concurrency=0), "generate.concurrency: must be >= 1, got 0"),
    (gen(**OPENAI, request_timeout=0), "generate.request_timeout: must be > 0, got 0"),
    (gen(**OPENAI, max_retries=-1), "generate.max_retries: must be >= 0, got -1"),
    (gen(**OPENAI, retry_backoff=-0.5), "generate.retry_backoff: must be >= 0, got -0.5"),
    (
        gen(**OPENAI, long_prompts="skip"),
        "generate.long_prompts: backend 'openai' cannot skip long prompts: the server checks lengths and refuses them",
    ),
    (gen(backend="magic"), "generate.backend: unknown backend 'magic' (choose from hf, openai, vllm)"),
    (gen(n=0), "generate.n: must be between 1 and 10000, got 0"),
    (gen(n=10_001), "generate.n: must be between 1 and 10000, got 10001"),
    (gen(temperature=9e-6), "generate.temperature: " + TEMPERATURE_MSG.format(9e-06)),
    (gen(temperature=inf), "generate.temperature: " + TEMPERATURE_MSG.format(inf)),
    (gen(temperature=-1.0), "generate.temperature: " + TEMPERATURE_MSG.format(-1.0)),
    (gen(temperature=100.5), "generate.temperature: " + TEMPERATURE_MSG.format(100.5)),
    (gen(top_k=2**31 + 1), "generate.top_k: must be between 0 and 2147483648, got 2147483649"),
    (gen(endpoint="responses"), "generate.endpoint: must be one of auto, chat, completions, got 'responses'"),
    (gen(top_p=0.0), "generate.top_p: must be in (0, 1], got 0.0"),
    (gen(top_p=1.01), "generate.top_p: must be in (0, 1], got 1.01"),
    (gen(top_k=-1), "generate.top_k: must be between 0 and 2147483648, got -1"),
    (gen(min_p=-0.1), "generate.min_p: must be in [0, 1), got -0.1"),
    (gen(min_p=1.0), "generate.min_p: must be in [0, 1), got 1.0"),
    (gen(repetition_penalty=0.0), "generate.repetition_penalty: must be between 0.01 and 100 (1 = off), got 0.0"),
    (gen(repetition_penalty=1e-300), "generate.repetition_penalty: must be between 0.01 and 100 (1 = off), got 1e-300"),
    (gen(repetition_penalty=inf), "generate.repetition_penalty: must be between 0.01 and 100 (1 = off), got inf"),
    (gen(stop=["ok", ""]), "generate.stop: stop strings must not be empty"),
    (gen(max_new_tokens=0), "generate.max_new_tokens: must be >= 1, got 0"),
    (gen(batch_size=0), "generate.batch_size: must be >= 1, got 0"),
    (gen(shard_size=0), "generate.shard_size: must be >= 1, got 0"),
    (gen(seed=-1), "generate.seed: " + SEED_MSG.format(-1)),
    (gen(seed=2**63), "generate.seed: " + SEED_MSG.format(2**63)),
    (gen(device="gpu"), "generate.device: " + DEVICE_MSG.format("gpu")),
    (gen(device="cuda:"), "generate.device: " + DEVICE_MSG.format("cuda:")),
    (gen(dtype="fp8"), "generate.dtype: " + DTYPE_MSG.format("fp8")),
    (gen(backend="vllm", tensor_parallel_size=0), "generate.tensor_parallel_size: must be >= 1, got 0"),
    (gen(backend="vllm", gpu_memory_utilization=0.0), "generate.gpu_memory_utilization: must be in (0, 1], got 0.0"),
    (gen(backend="vllm", gpu_memory_utilization=1.5), "generate.gpu_memory_utilization: must be in (0, 1], got 1.5"),
    (gen(backend="vllm", max_model_len=0), "generate.max_model_len: must be >= 1, got 0"),
    (gen(tensor_parallel_size=2), "generate.tensor_parallel_size: only the vllm backend takes it (got 2)"),
    (gen(gpu_memory_utilization=0.5), "generate.gpu_memory_utilization: only the vllm backend takes it (got 0.5)"),
    (gen(max_model_len=64), "generate.max_model_len: only the vllm backend takes it (got 64)"),
    (gen(long_prompts="truncate"), "generate.long_prompts: must be one of error, skip, got 'truncate'"),
    (ScoreConfig(reward_fn=None), "score.reward_fn: set reward_fn, reward_model, prm_model or reward_judge"),
    (
        ScoreConfig(reward_judge="http://j/v1"),
        "score.judge_model: reward_judge needs the judge model name (--judge-model)",
    ),
    (ScoreConfig(dtype="half"), "score.dtype: " + DTYPE_MSG.format("half")),
    (judge(judge_concurrency=0), "score.judge_concurrency: must be >= 1, got 0"),
    (judge(judge_request_timeout=0), "score.judge_request_timeout: must be a finite number of seconds > 0, got 0"),
    (judge(judge_request_timeout=inf), "score.judge_request_timeout: must be a finite number of seconds > 0, got inf"),
    (judge(judge_max_retries=-1), "score.judge_max_retries: must be >= 0, got -1"),
    (judge(judge_retry_backoff=-0.1), "score.judge_retry_backoff: must be >= 0, got -0.1"),
    (ScoreConfig(batch_tokens=0), "score.batch_tokens: must be >= 1, got 0"),
    (ScoreConfig(max_batch_size=0), "score.max_batch_size: must be >= 1, got 0"),
    (ScoreConfig(fn_batch_size=0), "score.fn_batch_size: must be >= 1, got 0"),
    (ScoreConfig(shard_size=0), "score.shard_size: must be >= 1, got 0"),
    (ScoreConfig(device="tpu"), "score.device: " + DEVICE_MSG.format("tpu")),
    (
        ScoreConfig(reward_prefix_sharing="yes"),
        "score.reward_prefix_sharing: must be one of auto, on, off, packed, got 'yes'",
    ),
    (
        SelectConfig(strategy="best"),
        "select.strategy: unknown strategy 'best' (choose from top_per_prompt, top_k_overall, top_k_per_prompt, threshold, random_per_prompt, random_k_overall, rso, passing)",
    ),
    (SelectConfig(strategy="top_k_overall"), "select.k: strategy top_k_overall needs k"),
    (SelectConfig(k=0), "select.k: must be >= 1, got 0"),
    (SelectConfig(strategy="threshold"), "select.threshold: strategy threshold needs a finite threshold, got None"),
    (
        SelectConfig(strategy="threshold", threshold=nan),
        "select.threshold: strategy threshold needs a finite threshold, got nan",
    ),
    (
        SelectConfig(pairs="worst"),
        "select.pairs: unknown pairing 'worst' (choose from best-worst, all, rso, pass-fail)",
    ),
    (SelectConfig(min_pass_rate=1.5), "select.min_pass_rate: must be in [0, 1], got 1.5"),
    (
        SelectConfig(min_pass_rate=0.8, max_pass_rate=0.2),
        "select.min_pass_rate: must be <= max_pass_rate (0.2), got 0.8",
    ),
    (SelectConfig(pass_threshold=nan), "select.pass_threshold: must be finite, got nan"),
    (ScoreConfig(pass_threshold=math.inf), "score.pass_threshold: must be finite, got inf"),
    (
        ScoreConfig(reward_fn=["length", "vader"], reward_weights=[1e308, 1e308]),
        "score.reward_weights: weights must be finite numbers between -1e+06 and 1e+06, got [1e+308, 1e+308]",
    ),
    (
        ScoreConfig(reward_fn=["length", "vader"], reward_weights=[1.0, -1000001.0]),
        "score.reward_weights: weights must be finite numbers between -1e+06 and 1e+06, got [1.0, -1000001.0]",
    ),
    (AdaptiveConfig(step=0), "adaptive.step: must be >= 1, got 0"),
    (
        AdaptiveConfig(step=2, stop_when="always"),
        "adaptive.stop_when: must be one of pass, pass-and-fail, passing:K, consensus:F, confident-consensus:F, "
        "got 'always'",
    ),
    (
        AdaptiveConfig(step=2, stop_when="consensus:2"),
        "adaptive.stop_when: consensus needs a share F in (0, 1] (consensus:0.6), got 'consensus:2'",
    ),
    (AdaptiveConfig(step=2, stop_when="pass:1"), "adaptive.stop_when: pass takes no parameter, got 'pass:1'"),
    (SelectConfig(strategy="rso"), "select.beta: strategy rso needs beta"),
    (SelectConfig(pairs="rso"), "select.beta: pairs rso needs beta"),
    (SelectConfig(beta=0.0), "select.beta: must be finite and > 0, got 0.0"),
    (SelectConfig(beta=inf), "select.beta: must be finite and > 0, got inf"),
    (SelectConfig(pair_k=1), "select.pair_k: must be >= 2, got 1"),
    (SelectConfig(min_margin=-0.1), "select.min_margin: must be finite and >= 0, got -0.1"),
    (SelectConfig(min_margin=inf), "select.min_margin: must be finite and >= 0, got inf"),
    (SelectConfig(seed=2**63), "select.seed: " + SEED_MSG.format(2**63)),
    (TrainConfig(learning_rate=0.0), "sft.learning_rate: must be finite and > 0, got 0.0"),
    (TrainConfig(learning_rate=inf), "sft.learning_rate: must be finite and > 0, got inf"),
    (TrainConfig(dtype="int8"), "sft.dtype: " + DTYPE_MSG.format("int8")),
    (TrainConfig(epochs=0.0), "sft.epochs: must be finite and > 0, got 0.0"),
    (TrainConfig(epochs=inf), "sft.epochs: must be finite and > 0, got inf"),
    (TrainConfig(lora_r=0), "sft.lora_r: must be >= 1, got 0"),
    (TrainConfig(lora_alpha=0), "sft.lora_alpha: must be >= 1, got 0"),
    (TrainConfig(seed=-1), "sft.seed: " + SEED_MSG.format(-1)),
    (TrainConfig(device="cuda0"), "sft.device: " + DEVICE_MSG.format("cuda0")),
    (TrainConfig(batch_size=0), "sft.batch_size: must be between 1 and 1048576, got 0"),
    (TrainConfig(batch_size=10**20), "sft.batch_size: must be between 1 and 1048576, got 100000000000000000000"),
    (TrainConfig(max_length=7), "sft.max_length: must be >= 8, got 7"),
    (RoundsConfig(count=0), "rounds.count: must be >= 1, got 0"),
    (RoundsConfig(pool="some"), "rounds.pool: must be one of all, latest, got 'some'"),
    (RoundsConfig(sft_from="best"), "rounds.sft_from: must be one of start, previous, got 'best'"),
    (DpoConfig(beta=0.0), "dpo.beta: must be finite and > 0, got 0.0"),
    (DpoConfig(beta=inf), "dpo.beta: must be finite and > 0, got inf"),
    (DpoConfig(dtype="x"), "dpo.dtype: " + DTYPE_MSG.format("x")),
    (DpoConfig(learning_rate=0.0), "dpo.learning_rate: must be finite and > 0, got 0.0"),
    (DpoConfig(learning_rate=inf), "dpo.learning_rate: must be finite and > 0, got inf"),
    (DpoConfig(epochs=0.0), "dpo.epochs: must be finite and > 0, got 0.0"),
    (DpoConfig(epochs=inf), "dpo.epochs: must be finite and > 0, got inf"),
    (DpoConfig(batch_size=0), "dpo.batch_size: must be between 1 and 1048576, got 0"),
    (DpoConfig(max_length=7), "dpo.max_length: must be >= 8, got 7"),
    (ServeConfig(backend="magic"), "serve.backend: unknown backend 'magic' (choose from hf, openai, vllm)"),
    (ServeConfig(backend="openai"), "serve.base_url: backend 'openai' needs the upstream server's URL (--base-url)"),
    (ServeConfig(port=-1), "serve.port: must be between 0 and 65535, got -1"),
    (ServeConfig(port=65536), "serve.port: must be between 0 and 65535, got 65536"),
    *[
        (ServeConfig(**{name: 0}), f"serve.{name}: must be between 1 and {high}, got 0")
        for name, high in [
            ("batch_size", 4096),
            ("max_best_of", 1024),
            ("max_n", 1024),
            ("max_tokens", 1048576),
            ("max_prompt_tokens", 4194304),
            ("max_body_bytes", 1073741824),
            ("max_batch_prompts", 4096),
            ("max_queue", 1048576),
            ("retry_after_s", 3600),
        ]
    ],
    (ServeConfig(best_of=0), "serve.best_of: must be between 1 and 1024, got 0"),
    (ServeConfig(default_max_tokens=0), "serve.default_max_tokens: must be between 1 and 1048576, got 0"),
    (ServeConfig(batch_window_ms=-1.0), "serve.batch_window_ms: must be between 0 and 10000, got -1.0"),
    (ServeConfig(keepalive_s=0.001), "serve.keepalive_s: must be between 0.01 and 300, got 0.001"),
    (ServeConfig(best_of=17), "serve.best_of: must be <= max_best_of (16)"),
    (ServeConfig(default_max_tokens=513), "serve.default_max_tokens: must be <= max_tokens (512)"),
]

# configs at the edge of what is allowed
GOOD = [
    judge(judge_concurrency=1, judge_request_timeout=0.001, judge_max_retries=0, judge_retry_backoff=0),
    gen(**OPENAI, concurrency=1, request_timeout=0.001, max_retries=0, retry_backoff=0.0),
    gen(n=1, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_new_tokens=1, batch_size=1, shard_size=1),
    gen(temperature=100.0, top_k=2**31, endpoint="completions"),
    gen(n=10_000, temperature=1e-5, top_p=1e-9, min_p=0.999, repetition_penalty=1e-2, seed=2**63 - 1),
    gen(seed=0, device="cuda:12", dtype="bfloat16", stop=["\n"]),
    gen(device="mps"),
    gen(backend="vllm", tensor_parallel_size=1, gpu_memory_utilization=1.0, max_model_len=1),
    gen(tensor_parallel_size=1, gpu_memory_utilization=None, max_model_len=None),  # defaults, any backend
    gen(long_prompts="skip"),
    ScoreConfig(reward_fn=None, reward_model="rm"),
    ScoreConfig(reward_fn=["length", "vader"], reward_weights=[1e6, -1e6]),
    ScoreConfig(reward_fn=None, reward_judge="http://j/v1", judge_model="j"),
    ScoreConfig(batch_tokens=1, max_batch_size=1, fn_batch_size=1, shard_size=1, reward_prefix_sharing="off"),
    SelectConfig(strategy="top_k_overall", k=1),
    SelectConfig(strategy="threshold", threshold=-1e300),
    SelectConfig(strategy="rso", beta=1e-9, pairs="rso", pair_k=2, min_margin=0.0, seed=2**63 - 1),
    SelectConfig(pairs="best-worst"),
    TrainConfig(
        learning_rate=1e-300, epochs=1e-9, lora=True, lora_r=1, lora_alpha=1, batch_size=1, max_length=8, seed=0
    ),
    RoundsConfig(count=1, pool="latest", sft_from="previous"),
    RoundsConfig(count=None),
    DpoConfig(beta=1e-9, learning_rate=1e-12, epochs=1e-3, batch_size=1, max_length=8),
    ServeConfig(port=0),
    ServeConfig(port=1),
    ServeConfig(port=65535, batch_window_ms=0.0, best_of=16, max_best_of=16, default_max_tokens=512),
    ServeConfig(
        backend="openai",
        base_url="http://u/v1",
        batch_size=1,
        best_of=1,
        max_best_of=1,
        max_n=1,
        default_max_tokens=1,
        max_tokens=1,
        max_prompt_tokens=1,
        max_body_bytes=1,
        max_batch_prompts=1,
        max_queue=1,
        retry_after_s=1,
    ),
]


@pytest.mark.parametrize("config, message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_bad_value_names_section_field_and_value(config, message):
    with pytest.raises(WinnowError) as e:
        config.validate()
    assert str(e.value) == message


@pytest.mark.parametrize("config", GOOD, ids=[f"{type(c).__name__}-{i}" for i, c in enumerate(GOOD)])
def test_boundary_value_is_accepted(config):
    config.validate()


def test_client_settings_only_for_the_openai_backend():
    assert generate_client(gen()) is None and generate_client(gen(backend="openai")) is None
    s = gen(**OPENAI, api_key_env="KEY", concurrency=3, request_timeout=9.0, max_retries=2, retry_backoff=2.5)
    c = generate_client(s)
    assert (c.base_url, c.api_key_env, c.concurrency, c.timeout, c.max_retries, c.backoff) == (
        "http://127.0.0.1:1/v1",
        "KEY",
        3,
        9.0,
        2,
        2.5,
    )
    assert upstream_client(ServeConfig()) is None and upstream_client(ServeConfig(backend="openai")) is None
    u = upstream_client(ServeConfig(backend="openai", base_url="http://u/v1", upstream_api_key_env="UP"))
    assert (u.base_url, u.api_key_env) == ("http://u/v1", "UP")


def test_sampling_and_engine_carry_every_field():
    g = gen(n=3, temperature=0.5, top_p=0.9, top_k=7, max_new_tokens=11, min_p=0.1, repetition_penalty=1.2, stop=["a"])
    s = sampling_of(g)
    assert (s.n, s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.min_p, s.repetition_penalty, s.stop) == (
        3,
        0.5,
        0.9,
        7,
        11,
        0.1,
        1.2,
        ("a",),
    )
    v = gen(backend="vllm", tensor_parallel_size=2, gpu_memory_utilization=0.3, max_model_len=99)
    assert v.engine() == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.3, "max_model_len": 99}


def test_stage_config_leaves_out_operational_fields():
    a = gen(**OPENAI, concurrency=1).stage_config()
    b = gen(**OPENAI, concurrency=64, request_timeout=1.0, max_retries=9, retry_backoff=3.0).stage_config()
    assert a == b
    assert not {"concurrency", "request_timeout", "max_retries", "retry_backoff"} & set(a) and a["n"] == 8
    assert gen(n=2).stage_config() != gen(n=3).stage_config()


# ---------------------------------------------------------------- build, _typed and load_yaml messages


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"n": "8"}, "cfg.yaml: field 'n': expected int, got '8' (str)"),
        ({"n": True}, "cfg.yaml: field 'n': expected int, got True (bool)"),
        ({"n": 2.0}, "cfg.yaml: field 'n': expected int, got 2.0 (float)"),
        ({"temperature": "hot"}, "cfg.yaml: field 'temperature': expected float, got 'hot' (str)"),
        ({"temperature": 10**400}, f"cfg.yaml: field 'temperature': {10**400} is too large for a float"),
        ({"stop": "###"}, "cfg.yaml: field 'stop': expected a list of strings, got '###'"),
        ({"stop": ["a", 1]}, "cfg.yaml: field 'stop': expected a list of strings, got ['a', 1]"),
        ({"base_url": 5}, "cfg.yaml: field 'base_url': expected str | None, got 5 (int)"),
        ({"models": ["m"], "nn": 1}, "cfg.yaml: field 'nn': unknown option for GenerateConfig"),
    ],
)
def test_build_type_errors_name_source_field_and_value(layer, message):
    with pytest.raises(WinnowError) as e:
        build(GenerateConfig, {"models": ["m"]}, layer, source="cfg.yaml")
    assert str(e.value) == message


def test_build_names_its_source():
    with pytest.raises(WinnowError) as e:
        build(GenerateConfig, {"nn": 1})
    assert str(e.value) == "config: field 'nn': unknown option for GenerateConfig"


def test_build_converts_ints_for_float_fields_and_keeps_the_rest():
    config = build(GenerateConfig, {"models": ["m"], "temperature": 1, "top_p": 1, "n": 3, "stop": ["x"]})
    assert type(config.temperature) is float and config.temperature == 1.0 and type(config.top_p) is float
    assert config.n == 3 and config.stop == ["x"] and config.base_url is None
    select = build(SelectConfig, {"dedup": True, "threshold": 0}, {"strategy": "threshold"})
    assert select.dedup is True and select.threshold == 0.0 and type(select.threshold) is float
    assert build(SelectConfig, {"k": 5}, {"k": None}).k == 5  # None in a later layer: not given
    assert build(SelectConfig) == SelectConfig()


def test_load_yaml_messages(tmp_path):
    path = tmp_path / "cfg.yaml"

    def refused(text: str) -> str:
        path.write_text(text)
        return refusal(load_yaml, path)

    assert refused("generate: 5\n") == f"{path}: field 'generate': expected a mapping of options, got int"
    assert refused("run_dir: 7\n") == f"{path}: field 'run_dir': expected a string, got 7 (int)"
    known = (
        "adaptive, dpo, eval, executor, export, generate, id_column, images, import, pick, prompt_column, prompts, "
        "rounds, run_dir, score, select, serve, sft"
    )
    assert refused("genrate: {}\n") == f"{path}: field 'genrate': unknown key (known: {known})"
    with pytest.raises(yaml.YAMLError) as parser_error:
        yaml.safe_load("generate: [1, 2\n")
    message = refused("generate: [1, 2\n")
    # the parser's own message, on one line
    assert message == f"{path}: invalid YAML: " + " ".join(str(parser_error.value).split())
    assert "expected ',' or ']'" in message
    assert refused("[1]\n") == f"{path}: expected a mapping at the top level"
    assert refusal(load_yaml, tmp_path / "nope.yaml") == f"config file does not exist: {tmp_path / 'nope.yaml'}"
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(WinnowError, match="config file does not exist"):
        load_yaml(tmp_path / "dir.yaml")


def test_load_yaml_paths_and_empty_sections(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("prompts: /abs/p.jsonl\ngenerate:\nselect: null\nrun_dir: r\n")
    assert load_yaml(path) == {"prompts": "/abs/p.jsonl", "generate": None, "select": None, "run_dir": "r"}
    path.write_text("")
    assert load_yaml(path) == {}


def test_executor_bounds_and_exact_messages():
    from winnow.config import ExecutorConfig
    from winnow.executors import EXECUTORS

    for name in EXECUTORS:
        ExecutorConfig(name=name).validate()
    ExecutorConfig(workers=1, cpus_per_worker=0.0, gpus_per_worker=0.0, retries=0).validate()  # last good values
    cases = [
        (
            {"name": "slurm"},
            f"executor.name: unknown executor 'slurm' (choose from {', '.join(EXECUTORS)})",
        ),
        ({"workers": 0}, "executor.workers: must be >= 1, got 0"),
        ({"cpus_per_worker": -0.5}, "executor.cpus_per_worker: must be >= 0, got -0.5"),
        ({"gpus_per_worker": -0.25}, "executor.gpus_per_worker: must be >= 0, got -0.25"),
        ({"retries": -1}, "executor.retries: must be >= 0, got -1"),
    ]
    for fields, message in cases:
        with pytest.raises(WinnowError) as caught:
            ExecutorConfig(**fields).validate()
        assert str(caught.value) == message
