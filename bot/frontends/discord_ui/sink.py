"""DiscordSink: one reply's messages (interaction response + follow-ups, or channel messages)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import discord

from bot.render.delivery import DeliveryRefused, RetryAfter, TransientSinkError

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
CONTINUED = "-# ⤵️ This answer continues in a new message: {url}"

# Error codes after which a message can no longer be edited through the interaction token.
_TOKEN_GONE = {50027, 10015}  # Invalid Webhook Token (expired), Unknown Webhook
_MESSAGE_GONE = 10008  # Unknown Message (someone deleted it)


@dataclass
class _Shown:
    message: discord.Message
    via_interaction: bool


class _Gone(Exception):
    """The message behind an index cannot be edited any more: show it anew in the channel."""


class DiscordSink:
    """A MessageSink for one reply.

    With an `interaction` (a deferred slash command), message 0 is its original response and
    further messages are follow-ups, all through the interaction token. The token dies 15
    minutes after the command: from `token_deadline` (wall-clock seconds) on, or as soon as
    Discord refuses the token, a message still changing moves to a new channel message (a
    reply to message 0), and the old one points there when the token still allows that.
    Without an interaction, messages are sent to `channel`, the first as a reply to `reply_to`.
    Messages that still change carry `make_view()` (the Stop button); final ones carry none.
    """

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        make_view: Callable[[], discord.ui.View],
        interaction: discord.Interaction | None = None,
        token_deadline: float = math.inf,
        reply_to: discord.Message | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._channel = channel
        self._make_view = make_view
        self._interaction = interaction
        self._token_deadline = token_deadline
        self._reply_to = reply_to
        self._wall_clock = wall_clock
        self._is_token_dead = interaction is None
        self._is_token_refused = False  # Discord said so (vs. our own deadline passing first)
        self._shown: dict[int, _Shown] = {}

    async def show(self, index: int, text: str, *, final: bool) -> None:
        view = None if final else self._make_view()
        try:
            await self._show(index, text, view)
        except discord.RateLimited as exc:  # over the client's max_ratelimit_timeout
            raise RetryAfter(exc.retry_after) from None
        except discord.HTTPException as exc:
            if exc.status == 429:  # the webhook adapter gave up after its own retries
                raise RetryAfter(_retry_after(exc)) from None
            if exc.status >= 500:
                raise TransientSinkError(
                    f"Discord answered {exc.status}", kind="server_error"
                ) from None
            if exc.status in (403, 404):  # permissions taken away, channel deleted
                raise DeliveryRefused(f"Discord answered {exc.status} {exc.text}") from None
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "network"
            raise TransientSinkError(repr(exc), kind=kind) from None

    async def mark_last(self, view: discord.ui.View) -> int | None:
        """Put `view` under the last message once the answer is final; returns its id."""
        if not self._shown:
            return None
        message = self._shown[max(self._shown)].message
        try:
            await message.edit(view=view)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.info("discord: buttons not added to an answer: %r", exc)
            return None
        return message.id

    # Routing ----------------------------------------------------------------------------------

    async def _show(self, index: int, text: str, view: discord.ui.View | None) -> None:
        shown = self._shown.get(index)
        if self._token_usable() and (shown is None or shown.via_interaction):
            try:
                message = await self._through_interaction(index, shown, text, view)
            except _Gone:
                pass
            else:
                self._shown[index] = _Shown(message, via_interaction=True)
                return
        if shown is not None and not shown.via_interaction:
            try:
                await _edit(shown.message, text, view)
                return
            except discord.NotFound:
                log.info("message %d of a reply was deleted; sending it again", index)
        message = await self._send(index, text, view)
        self._shown[index] = _Shown(message, via_interaction=False)
        if shown is not None and shown.via_interaction:
            await self._point_to(shown.message, message)
        elif shown is None and index == 0 and self._interaction is not None:
            await self._point_to(None, message)  # the deferred "thinking…" never got text

    def _token_usable(self) -> bool:
        if not self._is_token_dead and self._wall_clock() >= self._token_deadline:
            log.info("interaction token about to expire; continuing in channel messages")
            self._is_token_dead = True
        return not self._is_token_dead

    async def _through_interaction(
        self, index: int, shown: _Shown | None, text: str, view: discord.ui.View | None
    ) -> discord.Message:
        interaction = self._interaction
        assert interaction is not None
        try:
            if index == 0:
                return await interaction.edit_original_response(
                    content=text, view=view, allowed_mentions=NO_MENTIONS
                )
            if shown is None:
                return await interaction.followup.send(
                    text, wait=True, allowed_mentions=NO_MENTIONS, **_view_kwargs(view)
                )
            return await _edit(shown.message, text, view)
        except discord.HTTPException as exc:
            if exc.code in _TOKEN_GONE:
                log.info("interaction token refused (%s); continuing in channel messages", exc.code)
                self._is_token_dead = self._is_token_refused = True
                raise _Gone from None
            if exc.code == _MESSAGE_GONE:
                log.info("message %d of a reply was deleted; sending it again", index)
                raise _Gone from None
            raise

    async def _send(self, index: int, text: str, view: discord.ui.View | None) -> discord.Message:
        reference = self._reference_for(index)
        kwargs = _view_kwargs(view)
        if reference is not None:
            kwargs["reference"] = reference
        return await self._channel.send(text, allowed_mentions=NO_MENTIONS, **kwargs)

    def _reference_for(self, index: int) -> discord.MessageReference | None:
        """Message 0 answers the user's message; a continuation answers message 0."""
        if index == 0 and self._reply_to is not None:
            return self._reply_to.to_reference(fail_if_not_exists=False)
        first = self._shown.get(0)
        if self._interaction is not None and first is not None:
            return first.message.to_reference(fail_if_not_exists=False)
        return None

    async def _point_to(self, old: discord.Message | None, new: discord.Message) -> None:
        """Leave a pointer in the message that moved (None: the original response).

        Only while the token still works: after a proactive move, not after a refused edit.
        """
        if self._is_token_refused or self._interaction is None:
            return
        pointer = CONTINUED.format(url=new.jump_url)
        try:
            if old is None:
                await self._interaction.edit_original_response(
                    content=pointer, view=None, allowed_mentions=NO_MENTIONS
                )
            else:
                await _edit(old, pointer, None)
        except (TimeoutError, discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.info("could not point the moved message to its continuation: %r", exc)


def _view_kwargs(view: discord.ui.View | None) -> dict[str, object]:
    return {} if view is None else {"view": view}


async def _edit(
    message: discord.Message, text: str, view: discord.ui.View | None
) -> discord.Message:
    edited = await message.edit(content=text, view=view, allowed_mentions=NO_MENTIONS)
    return edited if isinstance(edited, discord.Message) else message


def _retry_after(exc: discord.HTTPException) -> float:
    header = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return max(float(header), 0.1) if header else 1.0
    except ValueError:
        return 1.0
