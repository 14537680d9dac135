"""Model bundles: a directory with model.onnx, card.json and (token models) tokenizer.json.

The card is the contract between the offline side that writes a bundle and the
worker that loads it. Loading checks everything the worker relies on up front, so
that a broken or incompatible bundle is refused with a reason before it serves a
single event (and a hot reload can keep the running model).

card.json fields used by the worker::

    name, version, kind ("transaction" | "sensor"), encoding_version,
    thresholds: {"alert": float, "severity": {"low": f, "medium": f, "high": f, "critical": f}},
    variants: {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"},
    inputs: ["input_ids", "attention_mask"] for a token model, whose card also has
        max_seq_len, buckets (padded lengths) and output ("logits", [B, 2]);
        a numeric model (the sensor model) names its graph inputs instead and has no tokenizer,
        its card holds sensor_model (asset types, relations, calibration, slots: see
        streamer/encoding/sensors.py) and the encoding checks it (``check_card``);
    architecture, training, metrics (informational, shown by doctor and docs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamer.encoding import for_kind, reads
from streamer.tokens import TokenEncoder

PACKAGE_BUNDLES = Path(__file__).resolve().parent / "bundles"
DEFAULT_BUNDLES = {"transaction": PACKAGE_BUNDLES / "transactions", "sensor": PACKAGE_BUNDLES / "sensors"}
SEVERITIES = ("low", "medium", "high", "critical")


class BundleError(ValueError):
    """A bundle that cannot be served, with the reason."""


@dataclass
class Bundle:
    path: Path
    card: dict[str, Any]
    tokens: TokenEncoder | None  # None for a model with numeric inputs (``card["inputs"]`` has no input_ids)
    model_path: Path
    encoding: Any = field(repr=False)

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def model_id(self) -> str:
        """``name@version``, stamped on every score so a record says which model made it."""
        return f"{self.card['name']}@{self.card['version']}"

    @property
    def alert_threshold(self) -> float:
        return float(self.card["thresholds"]["alert"])

    def severity(self, score: float) -> str | None:
        """Highest severity band whose lower bound ``score`` reaches, or None below the alert threshold."""
        if score < self.alert_threshold:
            return None
        bands = self.card["thresholds"].get("severity", {})
        level = "low"
        for name in SEVERITIES:
            if name in bands and score >= float(bands[name]):
                level = name
        return level

    def digest(self) -> str:
        """Short content hash of the graph, to tell two builds of one version apart in logs."""
        h = hashlib.sha256()
        with open(self.model_path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:12]


def load_card(path: Path) -> dict[str, Any]:
    card_path = Path(path) / "card.json"
    if not card_path.is_file():
        raise BundleError(f"{path}: no card.json (is this a model bundle directory?)")
    try:
        card = orjson.loads(card_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{card_path}: not valid JSON: {exc}") from None
    for key in ("name", "version", "kind", "encoding_version", "thresholds"):
        if key not in card:
            raise BundleError(f"{card_path}: missing field {key!r}")
    if "alert" not in card["thresholds"]:
        raise BundleError(f"{card_path}: thresholds.alert is missing")
    return card


def load_bundle(path: str | Path, precision: str = "fp32") -> Bundle:
    """Load and check a bundle; ``precision`` picks a variant listed in the card."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    card = load_card(path)
    try:
        encoding = for_kind(card["kind"])
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from None
    if not reads(encoding, card["encoding_version"]):
        raise BundleError(
            f"{path}: encoding {card['encoding_version']!r} does not match this worker's "
            f"{encoding.ENCODING_VERSION!r}; re-export the bundle or upgrade the worker"
        )
    variants = card.get("variants") or {"fp32": "model.onnx"}
    if precision not in variants:
        raise BundleError(f"{path}: no {precision} variant (has {sorted(variants)})")
    model_path = path / variants[precision]
    if not model_path.is_file():
        raise BundleError(f"{path}: {variants[precision]} is missing")
    if "input_ids" not in (card.get("inputs") or ["input_ids"]):
        check = getattr(encoding, "check_card", None)
        problem = check(card) if check is not None else None
        if problem:
            raise BundleError(f"{path}: {problem}")
        return Bundle(path=path, card=card, tokens=None, model_path=model_path, encoding=encoding)
    tok_path = path / "tokenizer.json"
    if not tok_path.is_file():
        raise BundleError(f"{path}: tokenizer.json is missing")
    try:
        tokens = TokenEncoder(tok_path, card["max_seq_len"], card.get("buckets") or (card["max_seq_len"],))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise BundleError(f"{tok_path}: cannot load tokenizer: {exc}") from None
    return Bundle(path=path, card=card, tokens=tokens, model_path=model_path, encoding=encoding)
