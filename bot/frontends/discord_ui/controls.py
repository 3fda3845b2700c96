"""The Stop button under an answer being written: a persistent component found by its custom_id."""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

STOP_ID_PREFIX = "r1bot:stop:"
REGENERATE_ID_PREFIX = "r1bot:regen:"
CONTINUE_ID_PREFIX = "r1bot:cont:"


class StopHandler(Protocol):
    """Whoever acts on a press (the front-end's handlers); reached through the client."""

    async def on_stop_pressed(self, interaction: discord.Interaction, owner_id: int) -> None: ...

    async def on_answer_button(
        self, interaction: discord.Interaction, owner_id: int, *, is_continue: bool
    ) -> None: ...


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.escape(STOP_ID_PREFIX) + r"(?P<owner>[0-9]{1,20})",
):
    """Stops the answer of `owner_id` in the channel it is pressed in.

    A DynamicItem: discord.py matches presses by custom_id on any message, so nothing is kept
    per message and buttons keep working after a restart (they then find nothing to stop).
    """

    def __init__(self, owner_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Stop",
                emoji="⏹️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{STOP_ID_PREFIX}{owner_id}",
            )
        )
        self.owner_id = owner_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> StopButton:
        return cls(int(match["owner"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: StopHandler = interaction.client.stop_handler  # type: ignore[attr-defined]
        await handler.on_stop_pressed(interaction, self.owner_id)


def stop_view(owner_id: int) -> discord.ui.View:
    """A view holding only the Stop button (nothing to store: the button is dynamic)."""
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(owner_id))
    return view


class AnswerButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"r1bot:(?P<kind>regen|cont):(?P<owner>[0-9]{1,20})",
):
    """Under a finished answer of `owner_id`: 🔄 answers its question again; ➡ (`is_continue`)
    lets an answer cut at the length limit go on."""

    def __init__(self, owner_id: int, *, is_continue: bool) -> None:
        prefix = CONTINUE_ID_PREFIX if is_continue else REGENERATE_ID_PREFIX
        super().__init__(
            discord.ui.Button(
                label="Continue" if is_continue else "Regenerate",
                emoji="➡️" if is_continue else "🔄",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{prefix}{owner_id}",
            )
        )
        self.owner_id = owner_id
        self.is_continue = is_continue

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> AnswerButton:
        return cls(int(match["owner"]), is_continue=match["kind"] == "cont")

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: StopHandler = interaction.client.stop_handler  # type: ignore[attr-defined]
        await handler.on_answer_button(interaction, self.owner_id, is_continue=self.is_continue)


def answer_view(owner_id: int, *, can_continue: bool) -> discord.ui.View:
    """🔄 Regenerate under a finished answer, and ➡ Continue if it was cut at the limit."""
    view = discord.ui.View(timeout=None)
    view.add_item(AnswerButton(owner_id, is_continue=False))
    if can_continue:
        view.add_item(AnswerButton(owner_id, is_continue=True))
    return view
