"""The `bpe`, `wordpiece` and `unigram` tokenizers, trained with Hugging Face `tokenizers`.

All three round-trip arbitrary Unicode text exactly (docs/tokenizers.md states the contract):

- `bpe`: character-level BPE with byte fallback (the SentencePiece/Llama recipe). Pre-tokens are
  GPT-2-style word / number / punctuation / whitespace pieces of the raw text (spaces kept, no `▁`);
  characters outside the learned alphabet are encoded as `<0xNN>` byte pieces.
  Ids: special tokens, then the 256 byte pieces, then characters and merges.
- `wordpiece`: WordPiece (greedy longest-match, trained by `WordPieceTrainer`) over the ByteLevel
  alphabet, so no text is unknown and whitespace survives. The continuation prefix is `＃＃`
  (fullwidth, outside the ByteLevel alphabet, so it can never be confused with text `##`); every
  byte exists both word-initially and as a continuation; pre-tokens are cut to <= 100 symbols.
  Ids: special tokens, `<|unk|>`, the 512 byte symbols, then learned pieces.
- `unigram`: a Unigram language model (`UnigramTrainer`) over the same raw pre-tokens as `bpe`, with
  `<0xNN>` byte fallback for characters it does not know.
  Ids: special tokens, `<|unk|>`, the 256 byte pieces, then the learned pieces.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmx.errors import DataError
from lmx.tokenizers.base import SPECIAL_TOKENS, UNK, check_special_ids, normalize_text, special_token_list
from lmx.tokenizers.hf_base import (
    BYTE_PIECE,
    HFTokenizer,
    backend_from_str,
    batched,
    byte_piece,
    check_min_vocab,
    normalizer_for,
    word_splitter,
)

WORDPIECE_PREFIX = "\uff03\uff03"  # "＃＃"
MAX_WORD_SYMBOLS = 100
MAX_ALPHABET = 1000
_CONTINUATION_BASE = 0xF0000  # private-use plane: marks non-initial symbols while training


def _alphabet_limit(vocab_size: int, fixed: int) -> int:
    """How many characters a character-level model may keep: half of what is left, at most 1000."""
    return max(1, min(MAX_ALPHABET, (vocab_size - fixed) // 2))


def _setup(backend: tokenizers.Tokenizer, normalization: str) -> None:
    if (norm := normalizer_for(normalization)) is not None:
        backend.normalizer = norm


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


class _Checked(HFTokenizer):
    model_type = ""

    def check(self, source: str) -> None:
        ids = self.special_ids
        if [ids.get(t) for t in SPECIAL_TOKENS] != [0, 1, 2]:
            raise DataError(
                f"data.tokenizer: {source} has special tokens {ids}, expected <|eos|>=0, <|pad|>=1, <|bos|>=2"
            )
        if self.backend.model.__class__.__name__ != self.model_type:
            raise DataError(f"data.tokenizer: {source} is not a {self.kind} tokenizer")


class BPETokenizer(_Checked):
    """Character-level BPE with `<0xNN>` byte fallback."""

    kind = "bpe"
    model_type = "BPE"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens=(), num_sentinels: int = 0,
              normalization: str = "none") -> BPETokenizer:
        specials = special_token_list(tuple(special_tokens), num_sentinels)
        fixed = len(specials) + 256
        check_min_vocab(cls.kind, vocab_size, fixed + 1, "special tokens + 256 byte pieces + characters")
        backend = tokenizers.Tokenizer(models.BPE())
        _setup(backend, normalization)
        backend.pre_tokenizer = word_splitter()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 256,
            special_tokens=specials,
            limit_alphabet=_alphabet_limit(vocab_size, fixed),
            show_progress=False,
        )
        backend.train_from_iterator(batched(texts), trainer=trainer)
        spec = json.loads(backend.to_str())
        learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])[len(specials):]
        vocab = {t: i for i, t in enumerate(specials)}
        vocab.update({byte_piece(b): len(specials) + b for b in range(256)})
        for piece, _ in learned:
            if piece in vocab:  # cannot happen: pre-tokens never join "<", "0x.." and ">"
                raise DataError(f"data.tokenizer: learned BPE piece {piece!r} collides with a byte piece")
            vocab[piece] = len(vocab)
        final = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=_merges(spec["model"]), byte_fallback=True))
        _setup(final, normalization)
        final.pre_tokenizer = word_splitter()
        final.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        final.add_special_tokens(specials)
        tok = cls(final)
        check_special_ids(tok, {t: i for i, t in enumerate(specials)}, "the trained tokenizer")
        return tok


class WordPieceTokenizer(_Checked):
    """WordPiece over the ByteLevel alphabet with the `＃＃` continuation prefix.

    Trained deterministically: each pre-token's non-initial symbols are mapped to a second, private
    copy of the byte alphabet, plain BPE is trained over that (so word-initial and continuation units
    are learned separately, all 512 start in the vocabulary), and the result is read back as a
    WordPiece vocabulary (`tokenizers`' own WordPieceTrainer numbers continuation symbols in hash
    order, so its output changes from run to run).
    """

    kind = "wordpiece"
    model_type = "WordPiece"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens=(), num_sentinels: int = 0,
              normalization: str = "none") -> WordPieceTokenizer:
        specials = [*special_token_list(tuple(special_tokens), num_sentinels), UNK]
        check_min_vocab(cls.kind, vocab_size, len(specials) + 512,
                        "special tokens + <|unk|> + 256 bytes, word-initial and continuation")
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        marked = {c: chr(_CONTINUATION_BASE + i) for i, c in enumerate(alphabet)}
        unmarked = {m: c for c, m in marked.items()}
        table = str.maketrans(marked)
        pre = _wordpiece_pre_tokenizer()

        def words(texts):
            for text in texts:
                text = normalize_text(text, normalization)
                yield " ".join(w[0] + w[1:].translate(table) for w, _ in pre.pre_tokenize_str(text))

        trainer_backend = tokenizers.Tokenizer(models.BPE())
        trainer_backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=alphabet + list(marked.values()), show_progress=False)
        trainer_backend.train_from_iterator(batched(words(texts)), trainer=trainer)
        learned = trainer_backend.get_vocab()
        vocab = {}
        for piece, token_id in learned.items():
            if piece in specials:
                vocab[piece] = token_id
            elif piece[0] in unmarked:
                vocab[WORDPIECE_PREFIX + "".join(unmarked[c] for c in piece)] = token_id
            else:
                vocab[piece[0] + "".join(unmarked[c] for c in piece[1:])] = token_id
        shell = tokenizers.Tokenizer(models.WordPiece(
            vocab={UNK: 0}, unk_token=UNK, max_input_chars_per_word=MAX_WORD_SYMBOLS))
        spec = json.loads(shell.to_str())
        spec["model"].update({"vocab": vocab, "continuing_subword_prefix": WORDPIECE_PREFIX})
        final = backend_from_str(json.dumps(spec), "the trained tokenizer")
        _setup(final, normalization)
        final.pre_tokenizer = pre
        final.decoder = decoders.Sequence([decoders.Replace(WORDPIECE_PREFIX, ""), decoders.ByteLevel()])
        final.add_special_tokens(specials)
        tok = cls(final)
        check_special_ids(tok, {t: i for i, t in enumerate(specials)}, "the trained tokenizer")
        return tok


def _wordpiece_pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Split(tokenizers.Regex(f".{{1,{MAX_WORD_SYMBOLS}}}"), behavior="isolated"),
    ])


class UnigramTokenizer(_Checked):
    """A Unigram language model with `<0xNN>` byte fallback."""

    kind = "unigram"
    model_type = "Unigram"

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens=(), num_sentinels: int = 0,
              normalization: str = "none") -> UnigramTokenizer:
        specials = [*special_token_list(tuple(special_tokens), num_sentinels), UNK]
        fixed = len(specials) + 256
        check_min_vocab(cls.kind, vocab_size, fixed + 8, "special tokens + <|unk|> + 256 byte pieces + pieces")
        texts = list(texts)
        # The trainer keeps every character it sees; keep the most frequent ones (bytes cover the rest).
        counts = collections.Counter()
        for text in texts:
            counts.update(text)
        keep = {c for c, _ in counts.most_common(_alphabet_limit(vocab_size, fixed))}
        drop = {ord(c): None for c in counts if c not in keep}
        backend = tokenizers.Tokenizer(models.Unigram())
        _setup(backend, normalization)
        backend.pre_tokenizer = word_splitter()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size - 256, special_tokens=specials, unk_token=UNK, show_progress=False)
        backend.train_from_iterator(batched(t.translate(drop) for t in texts), trainer=trainer)
        spec = json.loads(backend.to_str())
        model = spec["model"]
        pieces = model["vocab"]
        low = min((score for _, score in pieces[len(specials):]), default=0.0) - 10.0
        head, rest = pieces[: len(specials)], pieces[len(specials):]
        # The trainer's parallel EM leaves the last bits of scores, and the order of equal scores, to
        # chance: round and sort so that training the same text twice gives the same file.
        rest = sorted(([p, round(score, 8)] for p, score in rest), key=lambda ps: (-ps[1], ps[0]))
        if any(BYTE_PIECE.match(p) for p, _ in rest):
            raise DataError("data.tokenizer: a learned Unigram piece collides with a byte piece")
        model["vocab"] = [*head, *([byte_piece(b), low] for b in range(256)), *rest]
        model["unk_id"] = specials.index(UNK)
        model["byte_fallback"] = True
        if len(model["vocab"]) > vocab_size:  # more kept characters than pieces: drop the rarest pieces
            model["vocab"] = model["vocab"][:vocab_size]
        final = backend_from_str(json.dumps(spec), "the trained tokenizer")
        final.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        tok = cls(final)
        check_special_ids(tok, {t: i for i, t in enumerate(specials)}, "the trained tokenizer")
        return tok
