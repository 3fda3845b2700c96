"""World model and records of the fake Discord: users, guilds, channels, messages, interactions."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Permission bits.
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_PERMISSIONS = (
    PERM_ADD_REACTIONS
    | PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_USE_APPLICATION_COMMANDS
)

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15
SETTABLE_FLAGS = (
    FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2
)

# Interaction types and callback types.
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_MODAL_SUBMIT = 5
CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_MODAL = 9

DID_NOT_RESPOND = "The application did not respond"
MAX_CONTENT = 2000
MAX_EMBED_DESCRIPTION = 4096
MAX_EMBED_TITLE = 256
MAX_EMBEDS = 10


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


class Snowflakes:
    """Discord-style ids: milliseconds since 2015 in the high bits, so age checks work."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(self._last + 1, now)
        return self._last

    @staticmethod
    def time_of(snowflake: int) -> dt.datetime:
        ms = (snowflake >> 22) + DISCORD_EPOCH_MS
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


# ----------------------------------------------------------------------------- world model


@dataclass(eq=False)
class FakeUser:
    """A Discord user (or the bot user)."""

    id: int
    name: str
    is_bot: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": None if self.is_bot else self.name,
            "avatar": None,
            "bot": self.is_bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeRole:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int
    position: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
        }


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel (type 0) or a DM channel (type 1)."""

    id: int
    name: str | None
    guild_id: int | None = None
    recipient: FakeUser | None = None
    position: int = 0

    @property
    def is_dm(self) -> bool:
        return self.guild_id is None

    def to_json(self) -> dict[str, Any]:
        if self.is_dm:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "recipients": [self.recipient.to_json()],
                "last_message_id": None,
                "flags": 0,
            }
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeGuild:
    """A guild with text channels, roles (@everyone, Manager) and members."""

    id: int
    name: str
    owner: FakeUser
    roles: list[FakeRole]
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, FakeUser] = field(default_factory=dict)
    member_roles: dict[int, list[int]] = field(default_factory=dict)
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def everyone(self) -> FakeRole:
        return self.roles[0]

    @property
    def manager_role(self) -> FakeRole:
        """The role that grants Manage Server."""
        return self.roles[1]

    @property
    def default_channel(self) -> FakeChannel:
        return self.channels[0]

    def add_member(self, user: FakeUser, *, roles: Iterable[FakeRole] = ()) -> None:
        """Adds (or updates) a member with the given roles besides @everyone."""
        self.members[user.id] = user
        self.member_roles[user.id] = [role.id for role in roles]

    def permissions_of(self, user: FakeUser) -> int:
        """Guild-level permissions (no channel overwrites exist in this fake)."""
        if user.id == self.owner.id:
            return ALL_PERMISSIONS
        perms = self.everyone.permissions
        for role in self.roles:
            if role.id in self.member_roles.get(user.id, ()):
                perms |= role.permissions
        return ALL_PERMISSIONS if perms & PERM_ADMINISTRATOR else perms

    def member_json(
        self, user: FakeUser, *, with_user: bool = True, with_permissions: bool = False
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.member_roles.get(user.id, [])],
            "joined_at": _iso(self.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "pending": False,
            "avatar": None,
            "premium_since": None,
        }
        if with_user:
            data["user"] = user.to_json()
        if with_permissions:
            data["permissions"] = str(self.permissions_of(user))
        return data

    def to_json(self, *, with_members: bool) -> dict[str, Any]:
        """The GUILD_CREATE payload."""
        shown = (
            self.members.values()
            if with_members
            else [u for u in self.members.values() if u.is_bot]
        )
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.to_json() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": _iso(self.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [self.member_json(u) for u in shown],
            "channels": [c.to_json() for c in self.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


# ----------------------------------------------------------------------------- records


@dataclass
class CallRecord:
    """One REST call as the fake saw it."""

    at: float  # time.monotonic()
    method: str
    route: str  # "METHOD /template"
    path: str
    query: dict[str, str]
    json: Any
    files: list[dict[str, Any]]
    status: int = 0


@dataclass
class MessageSnapshot:
    """What a message showed from time `at` on."""

    at: float
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    flags: int


@dataclass(eq=False)
class MessageRecord:
    """A message and what it currently shows; kind is user, channel, original or followup."""

    id: int
    kind: str
    channel: FakeChannel
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    attachments: list[dict[str, Any]] = field(default_factory=list)
    mentions: list[FakeUser] = field(default_factory=list)
    type: int = 0
    interaction: InteractionRecord | None = None
    referenced: MessageRecord | None = None
    member_json: dict[str, Any] | None = None
    edited_at: dt.datetime | None = None
    is_deleted: bool = False
    history: list[MessageSnapshot] = field(default_factory=list)

    @property
    def is_ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def is_loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def num_edits(self) -> int:
        return len(self.history) - 1

    def custom_ids(self) -> dict[str, dict[str, Any]]:
        """Interactive components by custom_id (searched through rows and containers)."""
        found: dict[str, dict[str, Any]] = {}

        def walk(items: Iterable[Any]) -> None:
            for item in items:
                if not isinstance(item, dict):
                    continue
                if "custom_id" in item:
                    found[item["custom_id"]] = item
                walk(item.get("components", []))
                if isinstance(item.get("accessory"), dict):
                    walk([item["accessory"]])
                if isinstance(item.get("component"), dict):
                    walk([item["component"]])

        walk(self.components)
        return found

    def snapshot(self) -> None:
        self.history.append(
            MessageSnapshot(
                time.monotonic(), self.content, list(self.embeds), list(self.components), self.flags
            )
        )

    def to_json(
        self,
        *,
        app_id: int,
        strip_content: bool = False,
        hides: Callable[[MessageRecord], bool] | None = None,
    ) -> dict[str, Any]:
        """`hides`: whether a message's content is hidden from the receiver (nested ones too)."""
        hidden = strip_content or (hides is not None and hides(self))
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "author": self.author.to_json(),
            "content": "" if hidden else self.content,
            "timestamp": _iso(Snowflakes.time_of(self.id)),
            "edited_timestamp": _iso(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.to_json() for u in self.mentions],
            "mention_roles": [],
            "attachments": [] if hidden else self.attachments,
            "embeds": [] if hidden else self.embeds,
            "components": [] if hidden else self.components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.channel.guild_id is not None:
            data["guild_id"] = str(self.channel.guild_id)
        if self.member_json is not None:
            data["member"] = self.member_json
        if self.interaction is not None:
            data["webhook_id"] = str(app_id)
            data["application_id"] = str(app_id)
            data["interaction_metadata"] = self.interaction.metadata_json()
        if self.referenced is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.referenced.id),
                "channel_id": str(self.referenced.channel.id),
            }
            data["referenced_message"] = self.referenced.to_json(app_id=app_id, hides=hides)
        return data


@dataclass(eq=False)
class InteractionRecord:
    """An injected interaction and how the bot answered it; status: pending, answered, failed."""

    id: int
    token: str
    type: int
    name: str
    user: FakeUser
    channel: FakeChannel
    guild: FakeGuild | None
    payload: dict[str, Any]
    created_at: float
    expires_at: float
    status: str = "pending"
    failure: str | None = None
    callback_type: int | None = None
    callback_at: float | None = None
    callback_payload: dict[str, Any] | None = None
    original: MessageRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    source_message: MessageRecord | None = None

    @property
    def is_answered(self) -> bool:
        return self.status == "answered"

    @property
    def response_latency(self) -> float | None:
        """Seconds from dispatch to the callback, or None if never answered."""
        return None if self.callback_at is None else self.callback_at - self.created_at

    def metadata_json(self) -> dict[str, Any]:
        owner = str(self.guild.id) if self.guild else "0"
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "user": self.user.to_json(),
            "authorizing_integration_owners": {"0": owner},
        }
        if self.type == INTERACTION_APPLICATION_COMMAND:
            data["name"] = self.name
            data["command_type"] = 1
        if self.source_message is not None:
            data["interacted_message_id"] = str(self.source_message.id)
        return data


@dataclass(eq=False)

# ----------------------------------------------------------------------------- the world


class DiscordWorld:
    """Who and what exists: the bot and its application, users, guilds, DM channels."""

    def __init__(self, *, bot_name: str, privileged_intents: int) -> None:
        self.ids = Snowflakes()
        self.privileged_intents = privileged_intents
        self.bot = FakeUser(self.ids.next(), bot_name, is_bot=True)
        self.app_owner = FakeUser(self.ids.next(), "app-owner")
        self.application_id = self.bot.id
        self.users: dict[int, FakeUser] = {u.id: u for u in (self.bot, self.app_owner)}
        self.guilds: list[FakeGuild] = []
        self.dm_channels: dict[int, FakeChannel] = {}

    def add_user(self, name: str) -> FakeUser:
        """Creates a (human) user."""
        user = FakeUser(self.ids.next(), name)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        members: Iterable[FakeUser],
        managers: Iterable[FakeUser],
        owner: FakeUser | None,
        channels: Iterable[str],
    ) -> FakeGuild:
        """Creates a guild the bot is in; managers get a role with Manage Server."""
        guild_id = self.ids.next()
        roles = [
            FakeRole(guild_id, "@everyone", DEFAULT_PERMISSIONS),
            FakeRole(self.ids.next(), "Manager", PERM_MANAGE_GUILD, position=1),
        ]
        owner = owner or self.add_user(f"{name}-owner")
        guild = FakeGuild(guild_id, name, owner, roles)
        for position, channel_name in enumerate(channels):
            guild.channels.append(
                FakeChannel(self.ids.next(), channel_name, guild_id, position=position)
            )
        for user in (self.bot, owner, *members):
            guild.add_member(user)
        for user in managers:
            guild.add_member(user, roles=[guild.manager_role])
        self.guilds.append(guild)
        return guild

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The bot's DM channel with a user (created on first use)."""
        if user.id not in self.dm_channels:
            self.dm_channels[user.id] = FakeChannel(self.ids.next(), None, recipient=user)
        return self.dm_channels[user.id]

    def channel(self, channel_id: int) -> FakeChannel | None:
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel
        return next((c for c in self.dm_channels.values() if c.id == channel_id), None)

    def guild_of(self, channel: FakeChannel) -> FakeGuild | None:
        return next((g for g in self.guilds if g.id == channel.guild_id), None)

    def bot_user_json(self) -> dict[str, Any]:
        return self.bot.to_json() | {
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "email": None,
            "locale": "en-US",
        }

    def app_flags(self) -> int:
        """Application flags: the *_LIMITED bits say which privileged intents are enabled."""
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.privileged_intents & INTENT_GUILD_PRESENCES:
            flags |= 1 << 13
        if self.privileged_intents & INTENT_GUILD_MEMBERS:
            flags |= 1 << 15
        if self.privileged_intents & INTENT_MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags
