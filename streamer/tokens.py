"""Text -> padded token-id matrices, shared by training and serving.

Rows are left-truncated (the newest event is at the end of the text and must
survive), always end with ``[END]`` (the classifier pools the last real token, so
that token must never be padding) and are right-padded to one of a few bucket
lengths so that onnxruntime sees a handful of shapes instead of one per batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

PAD, UNK, END = "[PAD]", "[UNK]", "[END]"
SPECIAL_TOKENS = [PAD, UNK, END]
DEFAULT_BUCKETS = (16, 24, 32, 48, 64, 96, 128)


def bucket_for(length: int, buckets: Sequence[int], max_len: int) -> int:
    """Smallest bucket that holds ``length`` tokens, capped at ``max_len``.

    >>> bucket_for(17, (16, 32, 64), 64)
    32
    >>> bucket_for(100, (16, 32, 64), 64)
    64
    """
    for b in buckets:
        if b >= length and b <= max_len:
            return b
    return max_len


class TokenEncoder:
    """Tokenizer plus the truncation/padding rules of one bundle."""

    def __init__(self, tokenizer: Tokenizer | str | Path, max_len: int, buckets: Sequence[int] = DEFAULT_BUCKETS):
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(str(tokenizer))
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self.max_len = int(max_len)
        self.buckets = tuple(sorted(b for b in buckets if b <= self.max_len)) or (self.max_len,)
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}; train it with streamer.tokens.SPECIAL_TOKENS")
        self.pad_id, self.unk_id, self.end_id = ids[PAD], ids[UNK], ids[END]

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, left-truncated and ending with ``[END]``."""
        keep = self.max_len - 1
        out = []
        for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False):
            row = enc.ids
            if len(row) > keep:
                row = row[len(row) - keep :]
            out.append(row + [self.end_id])
        return out

    def pad(self, rows: Sequence[Sequence[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad rows into ``input_ids`` and ``attention_mask`` (int64)."""
        longest = max((len(r) for r in rows), default=1)
        width = length or bucket_for(longest, self.buckets, self.max_len)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            n = min(len(r), width)
            ids[i, :n] = r[len(r) - n :]
            mask[i, :n] = 1
        return ids, mask

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``ids`` then ``pad``: what the scorer feeds onnxruntime."""
        return self.pad(self.ids(texts), length)
