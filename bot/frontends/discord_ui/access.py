"""Who may do what on Discord: allowed users, configured admins, Manage Server in a guild."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.chat.commands import Standing
from bot.config import DiscordSettings


@dataclass(frozen=True, slots=True)
class Caller:
    """The person behind a command or message, as far as permissions go."""

    user_id: int
    is_dm: bool  # a direct message: the dialogue and its settings are this user's alone
    manages_server: bool  # has Manage Server in the guild the request came from
    guild_id: int | None = None
    channel_ids: frozenset[int] = frozenset()  # the channel, and a thread's parent channel
    role_ids: frozenset[int] = frozenset()  # the member's roles in that guild


class AccessPolicy:
    """The [discord] allowlists and `admins`, read on every call (a config reload applies at once).

    Each non-empty list (users, guilds, channels, roles) must let the caller through; an empty
    one restricts nothing. Configured admins may do anything anywhere. A member with Manage
    Server is an admin in their own server, but only where the operator's guild and channel
    lists let the bot answer. A DM is in no guild and has no roles: with `allowed_guilds` or
    `allowed_roles` set, only configured admins are answered in DMs.
    """

    def __init__(self, settings: Callable[[], DiscordSettings]) -> None:
        self._settings = settings

    def is_admin(self, caller: Caller) -> bool:
        """A configured admin, or a member with Manage Server (in their own server only)."""
        return self._is_configured_admin(caller) or (not caller.is_dm and caller.manages_server)

    def may_chat(self, caller: Caller) -> bool:
        if self._is_configured_admin(caller):
            return True
        s = self._settings()
        in_place = (not s.allowed_guilds or caller.guild_id in s.allowed_guilds) and (
            not s.allowed_channels or bool(caller.channel_ids & set(s.allowed_channels))
        )
        if not in_place:
            return False
        if not caller.is_dm and caller.manages_server:
            return True
        return (not s.allowed_users or caller.user_id in s.allowed_users) and (
            not s.allowed_roles or bool(caller.role_ids & set(s.allowed_roles))
        )

    def standing(self, caller: Caller) -> Standing:
        """The caller where they are, as the command rules judge them."""
        return Standing(
            is_allowed=self.may_chat(caller),
            is_admin=self._is_configured_admin(caller),
            manages_place=not caller.is_dm and caller.manages_server,
        )

    def _is_configured_admin(self, caller: Caller) -> bool:
        return caller.user_id in self._settings().admins


def is_open_to_everyone(settings: DiscordSettings) -> bool:
    return not (
        settings.allowed_users
        or settings.allowed_guilds
        or settings.allowed_channels
        or settings.allowed_roles
    )
