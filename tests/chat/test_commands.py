"""The command table: one rule per command, and the wording every front-end reads."""

from __future__ import annotations

import pytest

from bot.chat.commands import (
    BY_NAME,
    CONSOLE,
    DISCORD,
    RESET_OTHERS,
    TELEGRAM,
    Role,
    Standing,
    Wording,
    clipped,
    commands_for,
    is_clear,
)

STRANGER = Standing(is_allowed=False, is_admin=False)
MEMBER = Standing(is_allowed=True, is_admin=False)
MANAGER = Standing(is_allowed=True, is_admin=False, manages_place=True)  # Discord Manage Server
ADMIN = Standing(is_allowed=True, is_admin=True)


def allowed(name: str) -> list[str]:
    """Who of stranger, member, server manager and admin may run the command."""
    rule = BY_NAME[name].rule
    people = {"stranger": STRANGER, "member": MEMBER, "manager": MANAGER, "admin": ADMIN}
    return [who for who, standing in people.items() if rule.allows(standing)]


def test_each_command_has_one_rule() -> None:
    assert allowed("id") == ["stranger", "member", "manager", "admin"]
    for name in ("ask", "chat", "stop", "reset", "help", "start"):
        assert allowed(name) == ["member", "manager", "admin"], name
    # /system (showing it too) and others' dialogues: admins, and managers of their own server.
    assert allowed("system") == ["manager", "admin"]
    assert [RESET_OTHERS.allows(s) for s in (STRANGER, MEMBER, MANAGER, ADMIN)] == [
        False,
        False,
        True,
        True,
    ]
    # The whole bot's figures and config: configured admins only.
    assert allowed("stats") == allowed("reload") == ["admin"]


def test_a_server_manager_the_allowlists_keep_out_is_no_admin_there() -> None:
    outside = Standing(is_allowed=False, is_admin=False, manages_place=True)
    assert not BY_NAME["system"].rule.allows(outside)


def test_each_platform_has_its_commands() -> None:
    names = {p: {c.name for c in commands_for(p)} for p in ("telegram", "discord", "console")}
    common = {"reset", "system", "stats", "reload", "help"}
    assert names["telegram"] == common | {"ask", "stop", "id", "start"}
    assert names["discord"] == common | {"chat", "stop", "id"}
    assert names["console"] == common | {"exit"}


@pytest.mark.parametrize("wording", [TELEGRAM, DISCORD, CONSOLE], ids=lambda w: w.platform)
def test_help_lists_exactly_the_platforms_commands(wording: Wording) -> None:
    text = wording.help_text()
    for command in BY_NAME.values():
        listed = f"/{command.name}" in text
        assert listed == (wording.platform in command.platforms), command.name


def test_menus_say_which_commands_are_for_admins() -> None:
    assert BY_NAME["system"].describe("telegram") == (
        "Show or set this chat's system prompt (admins)"
    )
    assert BY_NAME["reset"].describe("discord") == "Start a new conversation"
    assert "(admins)" not in CONSOLE.help_text()  # the console's user runs the bot
    assert "/system [text|clear] — show or set this chat's system prompt (admins)" in (
        TELEGRAM.help_text()
    )
    assert not any(c.in_menu for c in commands_for("telegram") if c.rule.is_bot_wide)


def test_refusals_name_who_may() -> None:
    assert TELEGRAM.admins_only("system") == (
        "Only the bot's admins can view or change the system prompt."
    )
    assert DISCORD.admins_only("reset") == (
        "Only admins (or members with Manage Server) can reset someone else's conversation."
    )
    # Bot-wide commands: server managers are not admins of those anywhere.
    assert DISCORD.admins_only("reload") == TELEGRAM.admins_only("reload")
    assert DISCORD.admins_only("stats") == "Only the bot's admins can see its statistics."


def test_system_prompt_wording() -> None:
    assert TELEGRAM.system_shown("Be kind.", is_custom=False) == (
        "System prompt (the default):\n\nBe kind."
    )
    assert DISCORD.system_shown("> Be terse.", is_custom=True) == (
        "System prompt (set for this channel):\n\n> Be terse."
    )
    assert CONSOLE.system_shown("", is_custom=False).endswith("(empty)")
    assert (
        TELEGRAM.system_set() == "System prompt set for this chat. /reset to start afresh with it."
    )
    assert [is_clear(t) for t in ("clear", " Default ", "reset", "clear the air")] == [
        True,
        True,
        True,
        False,
    ]
    assert clipped("abcdef", 4) == "abc…" and clipped("abcd", 4) == "abcd"


def test_ids_for_the_allowlists() -> None:
    assert TELEGRAM.ids_text(5, -100) == "Your user id: 5\nThis chat's id: -100"
    assert DISCORD.ids_text(5, 6, 7) == (
        "Your user id: 5\nThis channel's id: 6\nThis server's id: 7"
    )


def test_roles_are_anyone_user_admin() -> None:
    assert {c.rule.role for c in BY_NAME.values()} == set(Role)
