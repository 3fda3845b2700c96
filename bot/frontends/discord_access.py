"""Who may do what on Discord: allowed users, configured admins, Manage Server in a guild."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NOT_ALLOWED = "Sorry, you are not on this bot's list of allowed users."
ADMINS_ONLY = "Only admins (or members with Manage Server) can do that here."


@dataclass(frozen=True, slots=True)
class Caller:
    """The person behind a command or message, as far as permissions go."""

    user_id: int
    is_dm: bool  # a direct message: the dialogue and its settings are this user's alone
    manages_server: bool  # has Manage Server in the guild the request came from


class AccessPolicy:
    """`allowed_users` (empty = everyone) and `admins` from the config; admins may do anything."""

    def __init__(self, *, allowed_users: Iterable[int], admins: Iterable[int]) -> None:
        self._allowed = frozenset(allowed_users)
        self._admins = frozenset(admins)

    def is_admin(self, caller: Caller) -> bool:
        """A configured admin, or a member with Manage Server (in their own server only)."""
        return caller.user_id in self._admins or (not caller.is_dm and caller.manages_server)

    def may_chat(self, caller: Caller) -> bool:
        return not self._allowed or caller.user_id in self._allowed or self.is_admin(caller)

    def may_configure_chat(self, caller: Caller) -> bool:
        """Change what a whole chat shares (its system prompt, others' dialogues)."""
        # A DM is a chat of one: its user configures it, as long as they may chat at all.
        return self.is_admin(caller) or (caller.is_dm and self.may_chat(caller))
