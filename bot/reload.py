"""Re-reading the config while the bot runs: what can change without the model, and what cannot."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

# Keys a running bot applies at once; a change to any other key needs a restart.
RELOADABLE = frozenset(
    {
        "telegram.admins",
        "telegram.allowed_users",
        "telegram.allowed_chats",
        "telegram.edit_interval",
        "discord.admins",
        "discord.allowed_users",
        "discord.allowed_guilds",
        "discord.allowed_channels",
        "discord.allowed_roles",
        "discord.edit_interval",
        "chat.system_prompt",
        "chat.max_message_chars",
        "generation.temperature",
        "generation.top_p",
        "generation.stop",
        "generation.timeout_seconds",
        "logging.level",
    }
)

Listener = Callable[[Settings], None]


class LiveSettings:
    """The settings in force now; readers look them up on every call, a reload swaps them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._listeners: list[Listener] = []

    @property
    def settings(self) -> Settings:
        return self._settings

    def subscribe(self, listener: Listener) -> None:
        """`listener(settings)` after each change (for values copied into longer-lived parts)."""
        self._listeners.append(listener)

    def replace(self, settings: Settings) -> None:
        self._settings = settings
        for listener in self._listeners:
            listener(settings)


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    applied: tuple[str, ...] = ()  # reloadable keys that changed, now in force
    needs_restart: tuple[str, ...] = ()  # changed keys that only a restart applies
    error: str | None = None  # the config was refused: nothing changed

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """One line for the log, two at most for a reply."""
        if self.error is not None:
            return f"Config not reloaded (the old settings stay): {self.error}"
        lines = [
            "Config reloaded: " + (", ".join(self.applied) if self.applied else "nothing changed")
        ]
        if self.needs_restart:
            lines.append("needs a restart: " + ", ".join(self.needs_restart))
        return "\n".join(lines)


class Reloader:
    """Re-reads the config file and the environment into `live`, keeping what needs a restart."""

    def __init__(
        self,
        live: LiveSettings,
        path: Path | None,
        env: Mapping[str, str],
        *,
        load: Callable[[Path | None, Mapping[str, str]], Settings] = load_settings,
    ) -> None:
        self._live = live
        self._path = path
        self._env = env
        self._load = load
        self._lock = asyncio.Lock()  # a SIGHUP and a /reload at once: one after the other

    async def reload(self) -> ReloadResult:
        async with self._lock:
            try:
                # A small file, but still disk I/O: off the event loop.
                fresh = await asyncio.to_thread(self._load, self._path, dict(self._env))
            except ConfigError as exc:
                result = ReloadResult(error=str(exc))
                log.error("%s", result.summary())
                return result
            current = self._live.settings
            changed = changed_keys(current, fresh)
            applied = tuple(k for k in changed if k in RELOADABLE)
            needs_restart = tuple(k for k in changed if k not in RELOADABLE)
            self._live.replace(merge_reloadable(current, fresh))
            result = ReloadResult(applied, needs_restart)
            log.log(
                logging.WARNING if needs_restart else logging.INFO,
                "%s",
                result.summary().replace("\n", "; "),
            )
            return result


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """'section.key' of every setting that differs (values never shown: some are secrets)."""
    keys = []
    for section in dataclasses.fields(Settings):
        if section.name == "source":
            continue
        before, after = getattr(old, section.name), getattr(new, section.name)
        for key in dataclasses.fields(before):
            if getattr(before, key.name) != getattr(after, key.name):
                keys.append(f"{section.name}.{key.name}")
    return keys


def merge_reloadable(old: Settings, new: Settings) -> Settings:
    """`old` with the reloadable keys taken from `new`: the rest waits for a restart."""
    sections = {}
    for key in RELOADABLE:
        section, name = key.split(".")
        base = sections.get(section, getattr(old, section))
        sections[section] = dataclasses.replace(
            base, **{name: getattr(getattr(new, section), name)}
        )
    return dataclasses.replace(old, **sections)
