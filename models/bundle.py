"""Write a model bundle directory the worker can load (see streamer/bundle.py for the schema).

Layout::

    model.onnx, model.fp16.onnx, model.int8.onnx   graphs (fp32 is the reference)
    tokenizer.json                                  word-level tokenizer
    card.json                                       everything the worker and a reviewer need
    checkpoint/config.json, checkpoint/model.safetensors
                                                    torch weights, so `fine-tune --bundle` can
                                                    continue training (the worker ignores them)

Why the card is checked by loading the bundle back: a bundle the worker would
refuse must fail here, at build time, not at deploy time.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import orjson

from streamer.bundle import load_bundle

MAX_BUNDLE_BYTES = 20 * 1024 * 1024
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
CHECKPOINT_DIR = "checkpoint"


# Code that determines what a bundle computes; uncommitted changes elsewhere do not mark it dirty.
BUNDLE_CODE = ("models", "streamer/encoding", "streamer/synth", "streamer/tokens.py", "streamer/windows.py",
               "streamer/validation.py")


def git_commit(repo: str | Path = ".") -> str | None:
    """The current commit, with +dirty when the code that shapes a bundle has uncommitted changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *BUNDLE_CODE], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def serving_fields(encoding: Any, max_seq_len: int, tokens: Any, tok: Any, window: Mapping[str, Any]) -> dict[str, Any]:
    """The card fields the worker serves by (encoding, shapes, I/O, tokenizer rules), the same for every kind."""
    return {
        "encoding_version": encoding.ENCODING_VERSION,
        "max_seq_len": max_seq_len,
        "buckets": list(tokens.buckets),
        "window": window,
        "inputs": ["input_ids", "attention_mask"],
        "input_dtype": "int64",
        "output": {"name": "logits", "shape": ["batch", 2], "dtype": "float32", "score": "softmax(logits)[:, 1]"},
        "tokenizer": {"type": "WordLevel", "vocab_size": tok.get_vocab_size(), "pad_id": tokens.pad_id,
                      "end_id": tokens.end_id, "padding": "right", "truncation": "left"},
    }


def write_card(out_dir: str | Path, card: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / "card.json"
    path.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    return path


def read_card(bundle_dir: str | Path) -> dict[str, Any]:
    return orjson.loads((Path(bundle_dir) / "card.json").read_bytes())


def bundle_bytes(out_dir: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(out_dir).rglob("*") if p.is_file())


def write_bundle(out_dir: str | Path, graphs: Mapping[str, str | Path], tokenizer_path: str | Path,
                 card: Mapping[str, Any], model: Any | None = None) -> Path:
    """Copy graphs and tokenizer into ``out_dir``, write card.json (and torch weights), then load it back.

    ``graphs`` maps variant name ("fp32", "fp16", "int8") to a file. Files already
    at their destination are left in place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = {}
    for name, src in graphs.items():
        dst = out / VARIANT_FILES[name]
        if Path(src).resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        variants[name] = VARIANT_FILES[name]
    for name, fname in VARIANT_FILES.items():  # stale variants from an older build would be misleading
        if name not in variants and (out / fname).exists():
            (out / fname).unlink()
    tok_dst = out / "tokenizer.json"
    if Path(tokenizer_path).resolve() != tok_dst.resolve():
        shutil.copyfile(tokenizer_path, tok_dst)
    if model is not None:
        ck = out / CHECKPOINT_DIR
        if ck.exists():
            shutil.rmtree(ck)
        model.save_pretrained(ck, safe_serialization=True)
    full = {**card, "variants": variants}
    write_card(out, full)
    size = bundle_bytes(out)
    if size > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundle {out} is {size / 2**20:.1f} MiB, over the {MAX_BUNDLE_BYTES / 2**20:.0f} MiB limit")
    for name in variants:
        load_bundle(out, precision=name)  # raises BundleError with the reason
    return out
