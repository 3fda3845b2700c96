"""Token ids -> text deltas, one token at a time, never ending inside a character."""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Streams the text of generated token ids by decoding a small sliding window.

    The prefix_offset/read_offset method of vLLM and TGI: decode the window once without and
    once with the unread tokens; the difference is the new text. Byte-level BPE splits one
    character over several tokens, so while the window's text ends in U+FFFD the unread
    tokens are held back. Special tokens (EOS, ...) are skipped; `<think>` is not special.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._skipped_ids = _special_ids(tokenizer)
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the already-emitted context in the window
        self._read_offset = 0  # tokens before this have been emitted as text

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text it completes (often "", never half a char)."""
        if token_id in self._skipped_ids:
            # They decode to "" anyway; dropping them keeps the window from growing.
            return ""
        self._ids.append(token_id)
        return self._read(is_final=False)

    def flush(self) -> str:
        """The stream ended: return held-back text, incomplete characters included (as U+FFFD)."""
        return self._read(is_final=True)

    def _read(self, *, is_final: bool) -> str:
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window_text = self._decode(self._ids[self._prefix_offset :])
        if len(window_text) <= len(prefix_text):
            return ""  # e.g. an id past the tokenizer's vocabulary: no text yet
        if window_text.endswith(_REPLACEMENT) and not is_final:
            return ""  # a character is still incomplete
        # The window keeps the last emitted tokens as context (what vLLM does for tokenizers
        # whose pieces decode differently at the start of a text); older ids are dropped.
        del self._ids[: self._read_offset]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        return window_text[len(prefix_text) :]

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids that `decode(..., skip_special_tokens=True)` leaves out."""
    ids = set(getattr(tokenizer, "all_special_ids", ()))
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids.update(token_id for token_id, token in added.items() if getattr(token, "special", False))
    return frozenset(ids)
