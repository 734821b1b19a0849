"""A loaded model's vocabulary and chat template, read from the weights the engine decodes with.

llama-cpp-python's ``Llama(vocab_only=True)`` would read the file a second time to build the
same vocabulary (~70 ms of a one-shot's start, and its memory); this is the few calls of
llama.cpp's C API that the embedded provider needs, on the weights it has already loaded.
"""

from __future__ import annotations

import ctypes
from typing import Any


class Vocabulary:
    """Tokenizing and detokenizing with the vocabulary of ``weights`` (a ``llama_model *``,
    which must outlive this object)."""

    def __init__(self, weights: Any) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.vocab = llama_cpp.llama_model_get_vocab(weights)
        template = llama_cpp.llama_model_chat_template(weights, None)
        self.chat_template: str | None = template.decode("utf-8") if template else None

    def n_vocab(self) -> int:
        return self._llama_cpp.llama_vocab_n_tokens(self.vocab)

    def token_bos(self) -> int:
        return self._llama_cpp.llama_vocab_bos(self.vocab)

    def token_eos(self) -> int:
        return self._llama_cpp.llama_vocab_eos(self.vocab)

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of sequence, end of turn)."""
        return bool(self._llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """``text`` as tokens; ``special``: special tokens' texts (``<|im_end|>``) are parsed."""
        cpp = self._llama_cpp
        size = len(text) + 2
        while True:
            tokens = (cpp.llama_token * size)()
            n = cpp.llama_tokenize(self.vocab, text, len(text), tokens, size, add_bos, special)
            if n >= 0:
                return tokens[:n]
            size = -n  # too small: llama.cpp says how many it needs

    def piece(self, token: int, special: bool = False) -> bytes:
        """One token's bytes (possibly part of a UTF-8 character); ``special``: special tokens
        render their text, otherwise nothing."""
        cpp = self._llama_cpp
        buffer = ctypes.create_string_buffer(64)  # per call: providers tokenize on many threads
        n = cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, special)
        if n < 0:  # longer: llama.cpp says how long
            buffer = ctypes.create_string_buffer(-n)
            n = cpp.llama_token_to_piece(self.vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"".join(self.piece(token, special) for token in tokens)
