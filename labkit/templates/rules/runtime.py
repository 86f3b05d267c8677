"""The runtime's rules (runtime/entrypoint.py): the settings in the kserve-container's env hold
values the entrypoint accepts, REVISION is a pinned commit, and ARG (further vLLM flags) splits
like a shell line, sets no flag the runtime owns and repeats none an env var sets.
"""

from __future__ import annotations

import re
import shlex
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from labkit.templates.parts import is_known
from labkit.templates.rules.registry import ERROR, WARNING, check, rule
from labkit.templates.spec import (
    BOOLS,
    DTYPES,
    FLAG_ALIASES,
    INT,
    REPO_ID,
    RUNTIME_ENV_FLAGS,
    RUNTIME_ENV_KINDS,
    SIZE,
    SIZE_MULT,
    WORD,
)
from labkit.util.names import COMMIT

if TYPE_CHECKING:
    from labkit.templates.rules.linter import Linter

ENTRYPOINT = "runtime/entrypoint.py"


# Python refuses to convert longer digit strings (sys.get_int_max_str_digits, 4300); no
# setting is anywhere near this long, so a longer one is no number the lint reads.
MAX_DIGITS = 4000


def whole_number(text: str) -> int | None:
    """A string of digits as an int (as the entrypoint's ``\\d+`` and int() read it), else None."""
    return int(text) if len(text) <= MAX_DIGITS and INT.fullmatch(text) else None


def size_value(text: str) -> int | None:
    """vLLM's human-readable integer (32k = 32,000; 4K = 4,096) as an int."""
    if len(text) > MAX_DIGITS:
        return None
    if INT.fullmatch(text):
        return int(text)
    if SIZE.fullmatch(text):  # exact: a float of a long number is infinite
        return int(Decimal(text[:-1]) * SIZE_MULT[text[-1]])
    return None


def check_runtime_value(kind: str, value: str) -> str | None:
    """What the entrypoint would say about a setting's value, or None when it accepts it."""
    if kind == "int" and (whole_number(value) or 0) < 1:
        return "expected a whole number of at least 1"
    if kind == "size" and not (size_value(value) or 0) >= 1:
        return "expected a positive whole number (or vLLM's 32k / 4G forms)"
    if kind == "fraction":
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not 0 < number <= 1:
            return "expected a fraction in (0, 1], e.g. 0.9"
    if kind == "dtype" and value.lower() not in DTYPES:
        return f"expected one of {', '.join(DTYPES)}"
    if kind == "bool" and value.strip().lower() not in BOOLS:
        return "expected true/false, 1/0 or yes/no"
    if kind == "word" and not WORD.fullmatch(value):
        return "expected a single word such as awq or fp8"
    return None


def canonical_flag(token: str) -> str | None:
    """The vLLM flag a token of ARG names, with vLLM's spellings folded ('_' for '-', aliases)."""
    if not re.match(r"--?[A-Za-z]", token):
        return None
    key = token.split("=", 1)[0]
    if key.startswith("--"):
        key = "--" + key[2:].replace("_", "-")
    key = FLAG_ALIASES.get(key, key)
    if key.startswith("--no-"):
        key = "--" + key[5:]
    return key


@check(
    "runtime",
    rule(
        "env-value",
        ERROR,
        "runtime settings hold values the entrypoint accepts",
        cite=ENTRYPOINT,
    ),
)
def env_value(lt: Linter) -> None:
    for name, kind in RUNTIME_ENV_KINDS.items():
        value = lt.value(name)
        if value is None:
            continue
        problem = check_runtime_value(kind, value)
        if problem:
            lt.emit(
                "env-value",
                f"{name}={value!r}: {problem} (the entrypoint refuses to start vLLM)",
            )
    model_id = lt.value("MODEL_ID")
    if model_id and not REPO_ID.fullmatch(model_id):
        lt.emit("env-value", f"MODEL_ID={model_id!r}: use a Hub repo id like org/name")


@check("runtime", rule("revision-pinned", WARNING, "REVISION is a full 40-hex commit"))
def revision_pinned(lt: Linter) -> None:
    revision = lt.value("REVISION")
    if revision and not COMMIT.fullmatch(revision):
        lt.emit(
            "revision-pinned",
            f"REVISION={revision!r} is not a full commit: pin the 40-hex commit you packaged, "
            "so a moved branch never changes what is served",
        )


def _arg(lt: Linter) -> Any:
    """ARG's rendered value; None when unset, unbound or blank."""
    arg = lt.env.get("ARG")
    if not is_known(arg) or not str(arg or "").strip():
        return None
    return arg


@check(
    "runtime",
    rule(
        "vllm-args",
        ERROR,
        "ARG splits like a shell line and sets no flag the runtime owns",
        cite=ENTRYPOINT,
    ),
)
def vllm_args(lt: Linter) -> None:
    arg = _arg(lt)
    if arg is None:
        return
    try:
        tokens = shlex.split(str(arg))
    except ValueError as exc:
        lt.emit(
            "vllm-args",
            f"ARG {arg!r} does not split like a shell line ({exc}): close or escape the quote",
        )
        return
    for i, token in enumerate(tokens):
        _owned_flag(lt, tokens, i, canonical_flag(token))


def _owned_flag(lt: Linter, tokens: list[str], i: int, flag: str | None) -> None:
    """A vllm-args error when ``tokens[i]`` (naming ``flag``) sets what the runtime owns."""
    if flag == "--model":
        lt.emit(
            "vllm-args",
            "ARG sets --model: remove it; the runtime serves the model in /mnt/models "
            "(choose it with modelId and revision)",
        )
    elif flag in ("--port", "--host"):
        lt.emit(
            "vllm-args",
            f"ARG sets {flag}: remove it; the server must listen on $PORT, the containerPort",
        )
    elif flag == "--quantization":
        token = tokens[i]
        value = token.split("=", 1)[1] if "=" in token else (tokens[i + 1 : i + 2] or [""])[0]
        if value.lower() in ("none", "null", ""):
            lt.emit(
                "vllm-args",
                f"ARG has --quantization {value or '(nothing)'}: vLLM has no such method; "
                "drop the flag for an unquantized model",
            )


@check(
    "runtime",
    rule("vllm-args-override", WARNING, "ARG does not repeat a flag an env var already sets"),
)
def vllm_args_override(lt: Linter) -> None:
    arg = _arg(lt)
    if arg is None:
        return
    try:
        tokens = shlex.split(str(arg))
    except ValueError:
        return  # vllm-args reports it
    given = {flag for flag in map(canonical_flag, tokens) if flag}
    for env_name, flag in RUNTIME_ENV_FLAGS.items():
        if flag in given and lt.value(env_name) is not None:
            lt.emit(
                "vllm-args-override",
                f"ARG sets {flag}, which overrides {env_name}={lt.value(env_name)}: "
                "set it in one place",
            )
