"""Word-level tokenizer over an encoding's own words.

Why word-level: every word the encodings emit is already a meaningful unit
(``amt7``, ``dnew``, ``g_gamble``), so one word = one token keeps sequences at
16-32 tokens, which is the main CPU cost lever of the classifier. Serving loads
``tokenizer.json`` with the ``tokenizers`` library alone (no transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from streamer.tokens import SPECIAL_TOKENS, UNK


def train(texts: Iterable[str], extra_words: Sequence[str] = (), min_frequency: int = 1) -> Tokenizer:
    """Train a WordLevel tokenizer; ids 0..2 are ``[PAD]``, ``[UNK]``, ``[END]``.

    ``extra_words`` (e.g. an encoding's full ``VOCABULARY``) are always included,
    so a bucket that happens to be absent from the training sample does not
    become ``[UNK]`` at serving time.

    >>> tok = train(["amt3 dnew", "amt3 dold"], extra_words=["amt4"])
    >>> [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    [0, 1, 2]
    >>> tok.encode("amt3 amt4 zzz").tokens
    ['amt3', 'amt4', '[UNK]']
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency,
                                        show_progress=False)

    def stream() -> Iterable[str]:
        yield from texts
        # Repeated so extra words clear any min_frequency.
        for _ in range(max(1, min_frequency)):
            yield " ".join(extra_words)

    tok.train_from_iterator(stream(), trainer=trainer)
    return _canonical(tok)


def _canonical(tok: Tokenizer) -> Tokenizer:
    """Re-number the vocabulary deterministically: specials first, then words sorted.

    The trainer orders words by frequency with ties in hash order; sorting makes
    the same words always get the same ids, so rebuilt bundles are byte-stable.
    """
    vocab = tok.get_vocab()
    words = sorted(w for w in vocab if w not in SPECIAL_TOKENS)
    ordered = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + words)}
    out = Tokenizer(models.WordLevel(vocab=ordered, unk_token=UNK))
    out.pre_tokenizer = pre_tokenizers.Whitespace()
    return out


def save(tok: Tokenizer, path: str | Path) -> Path:
    path = Path(path)
    tok.save(str(path))
    return path
