"""Discord helpers: Markdown is native there; these keep our own text from being read as markup."""

from __future__ import annotations

import discord.utils

from bot.render.split import utf16_length


def escape_discord_markdown(text: str) -> str:
    """Show `text` literally on Discord (for our status lines and notes, not model output)."""
    # discord.py's own escaping follows Discord's syntax as it grows (headers, subtext, links).
    return discord.utils.escape_markdown(text)


def discord_quote(text: str) -> str:
    """Prefix every line with '> ' (a Discord block quote)."""
    return "\n".join(f"> {line}" for line in text.split("\n"))


def discord_spoiler(text: str) -> str:
    """Wrap `text` in a spoiler; '|' inside is escaped so it cannot end the spoiler early."""
    return "||" + text.replace("|", "\\|") + "||"


def discord_quote_length(text: str) -> int:
    """Length of discord_quote(text) in UTF-16 units, additive per character (for splitting)."""
    return utf16_length(text) + 2 * text.count("\n")
