"""labkit.bench.workload: the shipped prompt set, vLLM's ShareGPT filter, seeded sampling and the
ShareGPT export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit import bench
from labkit.errors import ConfigError

# Entries of the shipped prompt set that vLLM's ShareGPT filter must drop with the default model's
# tokenizer: two logs over 1024 prompt tokens, two long answers whose prompt + output pass 2048.
OVER_THE_LIMITS = {"logs-05", "logs-06", "document-21", "document-22"}


class WordTokenizer:
    """One token a whitespace-separated word; no chat template."""

    chat_template = None

    def __call__(self, text: str) -> object:
        return type("Enc", (), {"input_ids": [hash(w) % 1000 for w in text.split()]})()


def prompt(pid: str, words: int, out: int) -> bench.Prompt:
    return bench.Prompt(pid, "test", " ".join(["w"] * words), out)


# --- the prompt set and the workload ------------------------------------------------------------


def test_the_shipped_prompt_set_is_about_a_hundred_varied_prompts() -> None:
    prompts = bench.load_prompts()
    assert 90 <= len(prompts) <= 120
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.category for p in prompts}) >= 8
    assert all(p.prompt.strip() and p.output_tokens >= bench.MIN_TOKENS for p in prompts)
    words = [len(p.prompt.split()) for p in prompts]
    assert min(words) < 10 and max(words) > 400  # short questions to long documents


def test_a_bad_prompt_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "hi", "output_tokens": 5}\n{"prompt": "no length"}\n')
    with pytest.raises(ConfigError) as exc:
        bench.load_prompts(bad)
    assert "line 2" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        bench.load_prompts(tmp_path / "missing.jsonl")


def test_the_filter_is_vllms_sharegpt_filter() -> None:
    assert bench.is_valid_pair(4, 4)
    assert bench.is_valid_pair(1024, 1024)
    assert not bench.is_valid_pair(3, 100)  # prompt too short
    assert not bench.is_valid_pair(100, 3)  # output too short
    assert not bench.is_valid_pair(1025, 10)  # prompt over 1024
    assert not bench.is_valid_pair(1000, 1049)  # prompt + output over 2048


def test_sampling_shuffles_with_the_seed_filters_and_oversamples() -> None:
    pool = [prompt(f"p{i}", 5 + i, 10 + i) for i in range(10)]
    pool.append(prompt("too-long", 1100, 10))
    pool.append(prompt("total-too-long", 1000, 1100))
    tok = WordTokenizer()
    a = bench.sample_workload(tok, 30, seed=7, prompts=pool)
    b = bench.sample_workload(tok, 30, seed=7, prompts=pool)
    c = bench.sample_workload(tok, 30, seed=8, prompts=pool)
    ids = [r.id for r in a.requests]
    assert ids == [r.id for r in b.requests]
    assert ids[:10] != [r.id for r in c.requests][:10]
    assert set(ids[:10]) == {f"p{i}" for i in range(10)}  # every valid prompt once, then repeats
    assert sorted(a.dropped) == ["too-long", "total-too-long"] and a.oversampled == 20
    assert [r.index for r in a.requests] == list(range(30))
    few = bench.sample_workload(tok, 3, seed=7, prompts=pool)
    assert [r.id for r in few.requests] == ids[:3]  # a smaller workload is a prefix
    capped = bench.sample_workload(tok, 10, seed=7, prompts=pool, max_output_tokens=12)
    assert max(r.output_tokens for r in capped.requests) == 12


def test_sampling_refuses_what_cannot_work() -> None:
    tok = WordTokenizer()
    with pytest.raises(ConfigError):
        bench.sample_workload(tok, 0, prompts=[prompt("a", 10, 10)])
    with pytest.raises(ConfigError):
        bench.sample_workload(tok, 2, prompts=[prompt("a", 10, 10)], max_output_tokens=3)
    with pytest.raises(ConfigError) as exc:
        bench.sample_workload(tok, 2, prompts=[prompt("a", 2000, 10)])
    assert "max_prompt_tokens" in str(exc.value)


def test_workload_with_the_models_tokenizer_is_deterministic_and_within_limits(tokenizer) -> None:
    a = bench.sample_workload(tokenizer, 150, seed=3)
    b = bench.sample_workload(tokenizer, 150, seed=3)
    assert [(r.id, r.prompt_token_ids, r.output_tokens) for r in a.requests] == [
        (r.id, r.prompt_token_ids, r.output_tokens) for r in b.requests
    ]
    assert set(a.dropped) == OVER_THE_LIMITS  # 150 > the set: every prompt was looked at
    assert a.oversampled == 150 - (len(bench.load_prompts()) - len(OVER_THE_LIMITS))
    for r in a.requests:
        assert bench.MIN_TOKENS <= r.prompt_tokens <= bench.MAX_PROMPT_TOKENS
        assert r.prompt_tokens + r.output_tokens <= bench.MAX_TOTAL_TOKENS
        # the chat template is applied, and the ids are the tokenizer's for the text sent
        assert r.prompt.startswith("<|im_start|>") and r.prompt.endswith("assistant\n")
        assert list(r.prompt_token_ids) == tokenizer(r.prompt).input_ids
    assert max(r.prompt_tokens for r in a.requests) > 500  # long prompts are in the mix
    small = bench.sample_workload(tokenizer, 8, seed=3, max_output_tokens=64)
    assert [r.id for r in small.requests] == [r.id for r in a.requests[:8]]
    assert all(r.output_tokens <= 64 for r in small.requests)
    assert small.summary()["output_tokens"]["max"] <= 64
    assert "8 requests" in small._repr_html_()


def test_sharegpt_export_gives_each_request_its_exact_lengths(tokenizer, tmp_path: Path) -> None:
    wl = bench.sample_workload(tokenizer, 6, seed=1, max_output_tokens=100)
    data = json.loads(wl.to_sharegpt(tmp_path / "w.json", tokenizer).read_text())
    assert len(data) == 6
    for r, entry in zip(wl.requests, data, strict=True):
        human, gpt = entry["conversations"]
        assert human["value"] == r.prompt
        assert len(tokenizer(gpt["value"]).input_ids) == r.output_tokens
