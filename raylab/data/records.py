"""Reading example records from a local file or a Hugging Face dataset, and rendering prompts from templates.

Shared by the GSM8K and MATH500 loaders. `source` is one of
    a local JSONL file (read line by line here, so a bad line is reported with its number),
    a local directory or .parquet / .json / .csv file (through `datasets.load_dataset`),
    a Hugging Face dataset id such as "openai/gsm8k" (through `datasets.load_dataset`; needs a network or a cache).
A source that looks like a path but does not exist is a FileNotFoundError, not a hub lookup.
"""
from __future__ import annotations

from pathlib import Path

from raylab.results import read_jsonl

DATASET_FILE_TYPES = {".parquet": "parquet", ".json": "json", ".csv": "csv"}
TEMPLATES = {
    "plain": "{question}",
    "qa": "Question: {question}\nAnswer:",
    "boxed": "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
}


def read_records(source: str | Path, split: str = "train", config: str | None = None) -> list[dict]:
    """The records (dicts) of `source`; `split` and `config` apply to directories and hub ids."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.exists():
        from datasets import load_dataset

        if path.is_dir():
            return [dict(r) for r in load_dataset(str(path), split=split)]
        if path.suffix not in DATASET_FILE_TYPES:
            raise ValueError(f"{source}: unsupported file type {path.suffix!r}; expected .jsonl, "
                             f"{', '.join(DATASET_FILE_TYPES)} or a directory")
        return [dict(r) for r in load_dataset(DATASET_FILE_TYPES[path.suffix], data_files=str(path), split="train")]
    if _looks_like_path(str(source)):
        raise FileNotFoundError(f"{source}: no such file or directory")
    return _load_hub(str(source), split, config)


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).suffix in (".jsonl", *DATASET_FILE_TYPES)


def _load_hub(name: str, split: str, config: str | None) -> list[dict]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown id, missing config: the library's errors vary, the message is ours
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"dataset {name!r} (config {config!r}, split {split!r}): cannot load it "
                         f"({type(err).__name__}: {first[:200]})") from None
    return [dict(r) for r in dataset]


def require_keys(record: dict, keys: tuple[str, ...], where: str, fmt: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r} ({fmt} records need {', '.join(keys)}; "
                         f"found {sorted(record)})")


def prompt_template(template: str) -> str:
    """A named template (plain, qa, boxed) or a format string with a {question} field, checked once."""
    text = TEMPLATES.get(template, template)
    try:
        rendered = text.format(question="\0")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"template: {template!r} is not one of {sorted(TEMPLATES)} nor a format string with "
                         f"only a {{question}} field ({type(err).__name__}: {err})") from None
    if "\0" not in rendered:
        raise ValueError(f"template: {template!r} is not one of {sorted(TEMPLATES)} and has no {{question}} field")
    return text


def select(examples: list[dict], difficulty: str | None, limit: int | None) -> list[dict]:
    """Keeps one difficulty ("easy" or "hard", None: all, the middle band too), then the first `limit` examples."""
    if difficulty not in (None, "easy", "hard"):
        raise ValueError(f"difficulty: expected 'easy', 'hard' or None, got {difficulty!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected a positive number of examples, got {limit}")
    if difficulty is not None:
        examples = [ex for ex in examples if ex["difficulty"] == difficulty]
    return examples[:limit]
