"""Discord interactions and messages in our vocabulary: who asks where, and short answers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord

from bot.frontends.discord_ui.access import Caller
from bot.frontends.discord_ui.sink import NO_MENTIONS
from bot.types import ChatError, ChatKey

log = logging.getLogger(__name__)

PLATFORM = "discord"
FAILED = "Sorry, something went wrong. Please try again."


def key_of(channel_id: int | None, user_id: int) -> ChatKey:
    """Each person has their own dialogue in each channel (a DM is a channel too)."""
    return ChatKey(platform=PLATFORM, chat_id=str(channel_id), user_id=str(user_id))


def caller_of(interaction: discord.Interaction) -> Caller:
    is_dm = interaction.guild_id is None
    return Caller(
        interaction.user.id,
        is_dm=is_dm,
        manages_server=not is_dm and interaction.permissions.manage_guild,
        guild_id=interaction.guild_id,
        channel_ids=_channel_ids(interaction.channel, interaction.channel_id),
        role_ids=_role_ids(interaction.user),
    )


def author_of(message: discord.Message) -> Caller:
    author = message.author
    return Caller(
        author.id,
        is_dm=message.guild is None,
        manages_server=isinstance(author, discord.Member) and author.guild_permissions.manage_guild,
        guild_id=message.guild.id if message.guild is not None else None,
        channel_ids=_channel_ids(message.channel),
        role_ids=_role_ids(author),
    )


def _channel_ids(channel: object, channel_id: int | None = None) -> frozenset[int]:
    """The channel's id and, for a thread, its parent's (allowed channels cover their threads)."""
    ids = {channel_id} if channel_id is not None else set()
    for attribute in ("id", "parent_id"):
        value = getattr(channel, attribute, None)
        if isinstance(value, int):
            ids.add(value)
    return frozenset(ids)


def _role_ids(user: object) -> frozenset[int]:
    if isinstance(user, discord.Member):
        return frozenset(role.id for role in user.roles)
    return frozenset()


def channel_of(interaction: discord.Interaction) -> discord.abc.Messageable:
    channel = interaction.channel
    if isinstance(channel, discord.abc.Messageable):
        return channel
    assert interaction.channel_id is not None
    return interaction.client.get_partial_messageable(interaction.channel_id)


async def tell(interaction: discord.Interaction, text: str) -> None:
    """Answer privately at once (refusals, errors, quick commands)."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def answer_privately(
    interaction: discord.Interaction, work: Callable[[], Awaitable[str]]
) -> None:
    """Acknowledge at once (ephemeral), then show what `work` says (it may touch the store)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await work()
    except ChatError as exc:
        text = str(exc)
    except Exception:
        command = interaction.command.name if interaction.command else "?"
        log.exception("discord: /%s failed", command)
        text = FAILED
    await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)


async def retract(interaction: discord.Interaction, text: str) -> None:
    """After a public defer: say `text` privately and remove the public placeholder."""
    try:
        # The first follow-up after a defer would replace the placeholder (public, whatever its
        # flags say), so resolve the placeholder first; then a follow-up can be ephemeral.
        await interaction.edit_original_response(content="…", allowed_mentions=NO_MENTIONS)
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        await interaction.delete_original_response()
    except discord.HTTPException as exc:
        log.warning("discord: could not report an error to the user: %r", exc)


async def reply(message: discord.Message, text: str) -> None:
    """A short answer to a message, as a reply to it."""
    try:
        await message.channel.send(
            text,
            reference=message.to_reference(fail_if_not_exists=False),
            allowed_mentions=NO_MENTIONS,
        )
    except discord.HTTPException as exc:
        log.warning("discord: could not answer a message: %r", exc)
