"""Whisper's token ids and text for the torch engine, from the model's ``tokenizer.json``.

Special ids are looked up by name in the vocabulary, so English-only (``<|endoftext|>`` = 50256)
and multilingual (50257) models both work; timestamp tokens follow ``<|notimestamps|>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stenod.errors import ModelLoadError
from stenod.models.ggml.assets import gpt2_byte_decoder

TIME_PRECISION_S = 0.02
"""Seconds per timestamp token step."""


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    languages: dict[str, int]
    """Language code -> token id (empty for English-only models)."""


class WhisperTokenizer:
    """Encode prompts and decode text and per-token bytes.

    Raises:
        ModelLoadError: ``tokenizer.json`` is missing, unreadable, or lacks Whisper's special tokens.
    """

    def __init__(self, tokenizer_json: Path, *, multilingual: bool) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # tokenizers raises a bare Exception for bad files
            raise ModelLoadError(f"{tokenizer_json}: cannot load tokenizer: {exc}") from exc

        def need(token: str) -> int:
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise ModelLoadError(f"{tokenizer_json}: no {token} token; not a Whisper tokenizer")
            return tid

        eot = need("<|endoftext|>")
        sot = need("<|startoftranscript|>")
        translate = need("<|translate|>")
        languages: dict[str, int] = {}
        # English-only vocabularies list the language tokens too, but the models never saw them.
        for tid in range(sot + 1, translate if multilingual else sot + 1):
            token = self._tok.id_to_token(tid) or ""
            if token.startswith("<|") and token.endswith("|>"):
                languages[token[2:-2]] = tid
        no_speech = self._tok.token_to_id("<|nospeech|>") or need("<|nocaptions|>")
        no_timestamps = need("<|notimestamps|>")
        self.special = SpecialTokens(
            eot=eot,
            sot=sot,
            translate=translate,
            transcribe=need("<|transcribe|>"),
            sot_lm=need("<|startoflm|>"),
            sot_prev=need("<|startofprev|>"),
            no_speech=no_speech,
            no_timestamps=no_timestamps,
            timestamp_begin=no_timestamps + 1,
            languages=languages,
        )

    @property
    def multilingual(self) -> bool:
        return bool(self.special.languages)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, tokens: list[int]) -> str:
        """Text of the ordinary tokens (special and timestamp tokens are dropped)."""
        return self._tok.decode([t for t in tokens if t < self.special.eot], skip_special_tokens=True)

    def token_bytes(self, token: int) -> bytes:
        piece = self._tok.id_to_token(token) or ""
        decoder = gpt2_byte_decoder()  # the same table the ggml converter writes
        return bytes(decoder[c] for c in piece if c in decoder)

    def sot_sequence(self, *, language: str | None, task: str) -> list[int]:
        s = self.special
        seq = [s.sot]
        if self.multilingual:
            seq.append(s.languages[language or "en"])
            seq.append(s.translate if task == "translate" else s.transcribe)
        return seq

    def non_speech_tokens(self) -> list[int]:
        """openai/whisper's ``tokenizer.non_speech_tokens``: symbols that are never speech, so
        they are suppressed (the ``-1`` in ``suppress_tokens``)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return sorted(result)

    def split_to_word_tokens(self, tokens: list[int], *, language: str) -> tuple[list[str], list[list[int]]]:
        """Group text tokens into words: at spaces for spaced languages, at Unicode code-point
        boundaries for ja/zh/th/lo/my/yue (openai/whisper's split rules)."""
        if language in {"zh", "ja", "th", "lo", "my", "yue"}:
            return self._split_unicode(tokens)
        subwords, subword_tokens = self._split_unicode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, toks in zip(subwords, subword_tokens, strict=False):
            special = toks[0] >= self.special.eot
            with_space = subword.startswith(" ")
            punctuation = subword.strip() in set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
            if special or with_space or punctuation or not words:
                words.append(subword)
                word_tokens.append(list(toks))
            else:
                words[-1] += subword
                word_tokens[-1].extend(toks)
        return words, word_tokens

    def _split_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        pending = b""
        for token in tokens:
            current.append(token)
            pending += self.token_bytes(token) if token < self.special.eot else b""
            try:
                text = pending.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a multi-byte character spans tokens
            words.append(text)
            word_tokens.append(current)
            current = []
            pending = b""
        return words, word_tokens
