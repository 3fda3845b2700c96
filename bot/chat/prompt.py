"""History -> chat messages -> a token budget -> the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.types import ChatError

# Only for tokenizers without a chat template; the model's own template is always preferred.
_FALLBACK_TAGS = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True, slots=True)
class PromptMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class Prompt:
    token_ids: tuple[int, ...]
    max_new_tokens: int  # what is left of the context for the answer
    num_dropped_messages: int  # oldest history messages left out to fit the budget
    opens_reasoning: bool  # the template already opened <think>: the output starts inside it


class PromptTooLong(ChatError):
    """Even the newest message alone does not fit the context."""


class PromptBuilder:
    """Renders a dialogue with the tokenizer's chat template, dropping the oldest turns to fit."""

    def __init__(self, tokenizer: Any, *, max_context_tokens: int, max_new_tokens: int) -> None:
        self._tokenizer = tokenizer
        self._max_context = max_context_tokens
        self._max_new = max_new_tokens
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
        # Control tokens (role tags, BOS/EOS, tool and FIM markers) that a user could type to fake
        # turns of the dialogue; the reasoning tags are harmless inside a user's text.
        added = getattr(tokenizer, "get_added_vocab", dict)()
        self._control_tokens = sorted(
            (t for t in added if t not in ("<think>", "</think>") and len(t) > 1),
            key=len,
            reverse=True,
        )

    @property
    def max_context_tokens(self) -> int:
        return self._max_context

    def build(self, system: str, history: Sequence[PromptMessage], user_text: str) -> Prompt:
        """The prompt for answering `user_text` after `history` (oldest first)."""
        # Keep room for a long answer (reasoning runs to thousands of tokens), but never let the
        # answer reservation take more than half the context.
        reserve = min(self._max_new, self._max_context // 2)
        budget = self._max_context - reserve
        turns = _group_turns(history)
        newest = PromptMessage("user", user_text)

        def render(num_dropped_turns: int) -> list[int]:
            kept = [m for turn in turns[num_dropped_turns:] for m in turn]
            return self._encode(system, [*kept, newest])

        ids = render(len(turns))
        if len(ids) > budget:
            raise PromptTooLong(
                f"Your message is too long for the model: it takes {len(ids)} tokens with the "
                f"system prompt, and at most {budget} fit. Please shorten it."
            )
        # The fewest dropped turns that fit: binary search, since each render is a full encode.
        low, high = 0, len(turns)
        best = ids
        while low < high:
            middle = (low + high) // 2
            candidate = render(middle)
            if len(candidate) <= budget:
                high, best = middle, candidate
            else:
                low = middle + 1
        num_dropped = sum(len(turn) for turn in turns[:low])
        return Prompt(
            token_ids=tuple(best),
            max_new_tokens=min(self._max_new, self._max_context - len(best)),
            num_dropped_messages=num_dropped,
            opens_reasoning=self._opens_reasoning(best),
        )

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, system: str, messages: Sequence[PromptMessage]) -> list[int]:
        chat = [
            {
                "role": m.role,
                "content": self._inert(m.content) if m.role != "assistant" else m.content,
            }
            for m in messages
        ]
        if system:
            chat.insert(0, {"role": "system", "content": self._inert(system)})
        if self._has_template:
            text = self._tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
            # The template writes the BOS token itself.
            return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        # Like the model's template, leave earlier replies' reasoning out.
        text = "".join(f"{_FALLBACK_TAGS[m['role']]}: {_without_reasoning(m)}\n\n" for m in chat)
        return list(self._tokenizer(text + "Assistant:", add_special_tokens=True)["input_ids"])

    def _inert(self, text: str) -> str:
        """`text` with control-token strings broken up, so they tokenize as plain text."""
        for token in self._control_tokens:
            if token in text:
                text = text.replace(token, token[0] + "\u200b" + token[1:])
        return text

    def _opens_reasoning(self, ids: Sequence[int]) -> bool:
        tail = self._tokenizer.decode(list(ids[-4:]), skip_special_tokens=False)
        return tail.rstrip().endswith("<think>")


def _without_reasoning(message: dict[str, str]) -> str:
    """A message's text; for an earlier reply, only what follows its </think>."""
    if message["role"] == "assistant" and "</think>" in message["content"]:
        return message["content"].split("</think>")[-1].lstrip()
    return message["content"]


def _group_turns(history: Sequence[PromptMessage]) -> list[list[PromptMessage]]:
    """Split history into turns that start at a user message, so trimming never orphans a reply."""
    turns: list[list[PromptMessage]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns
