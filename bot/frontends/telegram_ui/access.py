"""Who may use the bot where: the [telegram] allowlists and admins."""

from __future__ import annotations

from collections.abc import Callable

from bot.chat.commands import Standing
from bot.config import TelegramSettings


class Access:
    """Who may use the bot where: `admins`, `allowed_users` and `allowed_chats` of [telegram].

    Each non-empty list must let the message through (an empty one restricts nothing); admins
    are always allowed. The lists are read on every call, so a config reload applies at once.
    """

    def __init__(self, settings: Callable[[], TelegramSettings]) -> None:
        self._settings = settings

    def is_admin(self, user_id: int) -> bool:
        return user_id in self._settings().admins

    def is_allowed(self, user_id: int, chat_id: int | None = None) -> bool:
        """`chat_id` None: only the user is judged (a private chat's id is its user's id)."""
        settings = self._settings()
        if user_id in settings.admins:
            return True
        if settings.allowed_users and user_id not in settings.allowed_users:
            return False
        chat = user_id if chat_id is None else chat_id
        return not settings.allowed_chats or chat in settings.allowed_chats

    def standing(self, user_id: int, chat_id: int) -> Standing:
        """The user in that chat, as the command rules judge them."""
        return Standing(
            is_allowed=self.is_allowed(user_id, chat_id), is_admin=self.is_admin(user_id)
        )


def is_open_to_everyone(settings: TelegramSettings) -> bool:
    return not (settings.allowed_users or settings.allowed_chats)
