"""KV reuse across turns: a reused turn gives exactly the tokens of a cold one, and is counted.

Dialogues are built the way the chat service builds them (PromptBuilder with the model's own
chat template), answered greedily by the tiny float32 model with and without reuse.
"""

from __future__ import annotations

import pytest

from bot.chat.prompt import PromptBuilder
from bot.engine.base import FinishReason, GenerationRequest, SamplingParams
from bot.types import ChatMessage
from tests.engine.streams import collect

GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0)
QUESTIONS = [
    "Hello! Who are you?",
    "What is the capital of France, and why is it famous?",
    "Write a haiku about the sea.",
    "Now explain the haiku, line by line, in detail please.",
]


class Dialogue:
    """One chat's turns: history, system prompt and conversation as the service keeps them."""

    def __init__(self, prompts: PromptBuilder, name: str, system: str = "") -> None:
        self.prompts = prompts
        self.name = name
        self.system = system
        self.conversation = 1
        self.history: list[ChatMessage] = []

    def request(self, text: str) -> GenerationRequest:
        prompt = self.prompts.build(self.system, self.history, text)
        self.history.append(ChatMessage("user", text))
        return GenerationRequest(
            prompt.token_ids, GREEDY, owner=self.name, dialogue=f"{self.name}:{self.conversation}"
        )

    def answered(self, text: str) -> None:
        self.history.append(ChatMessage("assistant", text))

    def reset(self) -> None:
        self.conversation += 1
        self.history = []


async def ask(engine, dialogue: Dialogue, text: str):
    result = await collect(engine.submit(dialogue.request(text)))
    assert result.reason == FinishReason.LENGTH
    dialogue.answered(result.text)
    return result


@pytest.fixture
def prompts(tokenizer) -> PromptBuilder:
    return PromptBuilder(tokenizer, max_context_tokens=2048, max_new_tokens=64)


async def run_both(make_engine, random_model, steps, *, num_slots: int = 2):
    """Run `steps(engine)` on an engine with reuse and one without; both results."""
    results = []
    for reuse in (True, False):
        engine = make_engine(
            random_model,
            num_slots=num_slots,
            slot_tokens=2048,
            eos_token_ids=(),
            prefix_reuse=reuse,
        )
        async with engine:
            results.append((await steps(engine), engine.reuse_stats))
    return results


async def test_several_turns_reuse_the_dialogue_and_give_the_cold_tokens(
    make_engine, random_model, prompts
):
    async def steps(engine):
        dialogue = Dialogue(prompts, "alice", system="You are terse.")
        return [await ask(engine, dialogue, q) for q in QUESTIONS]

    (warm, stats), (cold, cold_stats) = await run_both(make_engine, random_model, steps)
    assert [r.text for r in warm] == [r.text for r in cold]
    reused = [r.finished.num_reused_tokens for r in warm]
    assert reused[0] == 0
    # Each later turn reuses its previous prompt but the "<think>\n" that opened the answer
    # (a later prompt resends the answer without its reasoning), so reuse ends there.
    prompt_lengths = [r.finished.num_prompt_tokens for r in warm]
    assert all(reused[i] >= prompt_lengths[i - 1] - 2 for i in range(1, len(warm)))
    assert stats.num_hits == 3 and stats.num_reused_tokens == sum(reused)
    assert cold_stats.num_hits == 0 and all(r.finished.num_reused_tokens == 0 for r in cold)


async def test_a_changed_system_prompt_a_reset_and_trimming_are_misses_not_wrong_answers(
    make_engine, random_model, tokenizer
):
    # A small context, so the fourth turn no longer fits whole: its oldest turn is dropped.
    prompts = PromptBuilder(tokenizer, max_context_tokens=160, max_new_tokens=16)

    async def steps(engine):
        dialogue = Dialogue(prompts, "bob", system="You are terse.")
        out = [await ask(engine, dialogue, QUESTIONS[0])]
        dialogue.system = "Answer at length."  # /system
        out.append(await ask(engine, dialogue, QUESTIONS[1]))
        dialogue.reset()  # /reset
        out.append(await ask(engine, dialogue, QUESTIONS[2]))
        out.append(await ask(engine, dialogue, QUESTIONS[3]))  # trimmed to fit
        return out

    (warm, _), (cold, _) = await run_both(make_engine, random_model, steps)
    assert [r.text for r in warm] == [r.text for r in cold]
    first_prompt = warm[0].finished.num_prompt_tokens
    # After /system and /reset only the template's opening (BOS, up to the changed text) matches.
    assert warm[1].finished.num_reused_tokens < 3
    assert warm[2].finished.num_reused_tokens < first_prompt


async def test_another_chat_in_the_slot_between_turns_is_a_miss_with_the_right_answer(
    make_engine, random_model, prompts
):
    async def steps(engine):
        alice, carol = Dialogue(prompts, "alice"), Dialogue(prompts, "carol")
        out = [await ask(engine, alice, QUESTIONS[0])]
        out.append(await ask(engine, carol, QUESTIONS[2]))  # one slot: carol takes alice's
        out.append(await ask(engine, alice, QUESTIONS[1]))
        return out

    (warm, stats), (cold, _) = await run_both(make_engine, random_model, steps, num_slots=1)
    assert [r.text for r in warm] == [r.text for r in cold]
    # Alice's second turn found carol's tokens in the slot: only the template's start is shared.
    assert warm[2].finished.num_reused_tokens < 5
    assert stats.num_misses >= 1
