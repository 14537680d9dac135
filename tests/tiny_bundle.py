"""A tiny stand-in bundle for fast pipeline tests: real ONNX, real tokenizer, trivial model.

The model averages token embeddings and applies a linear layer, with the weight of
a chosen set of words raised so that "risky" words score high. It exercises the
worker's whole path (tokenizer, buckets, onnxruntime, thresholds) in microseconds
per event; tests about the trained DeepSeek model use the shipped bundles instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import orjson
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers

from streamer.encoding import for_kind
from streamer.tokens import SPECIAL_TOKENS


def make_tiny_bundle(out: Path, kind: str = "transaction", words: list[str] | None = None, risky: tuple[str, ...] = (), version: str = "0.0.1", name: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    enc = for_kind(kind)
    vocab_words = list(dict.fromkeys((words or []) + list(risky)))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(out / "tokenizer.json"))
    v, d = len(vocab), 4
    emb = np.zeros((v, d), dtype=np.float32)
    for w in risky:
        emb[vocab[w], 0] = 8.0
    w_out = np.array([[0.0, 1.0], [0, 0], [0, 0], [0, 0]], dtype=np.float32)
    b_out = np.array([0.0, -4.0], dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "axes1"], ["s"], keepdims=0),
        helper.make_node("MatMul", ["s", "w"], ["l0"]),
        helper.make_node("Add", ["l0", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"]), helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 2])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w_out, "w"), numpy_helper.from_array(b_out, "b"), numpy_helper.from_array(np.array([2], dtype=np.int64), "axes"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out / "model.onnx"))
    card = {
        "name": name or f"tiny-{kind}",
        "version": version,
        "kind": kind,
        "encoding_version": enc.ENCODING_VERSION,
        "max_seq_len": 32,
        "buckets": [16, 32],
        "window": dict(enc.WINDOW),
        "inputs": ["input_ids", "attention_mask"],
        "output": "logits",
        "thresholds": {"alert": 0.5, "severity": {"low": 0.5, "medium": 0.8, "high": 0.95, "critical": 0.99}},
        "normalization": {},
        "variants": {"fp32": "model.onnx"},
    }
    (out / "card.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return out
