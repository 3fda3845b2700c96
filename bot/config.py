"""TOML -> typed, validated settings; bot tokens may come from the environment."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bot.render.delivery import DeliveryOptions

DEFAULT_CONFIG_PATH = Path("config.toml")
TOKEN_ENV = {"telegram": "TELEGRAM_BOT_TOKEN", "discord": "DISCORD_BOT_TOKEN"}
ENV_PREFIX = "BOT_"
OPENAI_KEY_ENV = "OPENAI_API_KEY"


class ConfigError(Exception):
    """A configuration problem, phrased for the person who wrote the file."""


def _check(predicate: str) -> dict[str, str]:
    """Field metadata: a rule the value must satisfy (see _RULES)."""
    return {"rule": predicate}


def _is_proxy_url(value: str, schemes: tuple[str, ...]) -> bool:
    """Empty, or scheme://[user:password@]host[:port] with one of `schemes` and a valid port."""
    if not value:
        return True
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 -- raises ValueError for a port that is not 1-65535
    except ValueError:
        return False
    return url.scheme in schemes and bool(url.hostname)


def _is_http_url(value: str) -> bool:
    """http(s)://host[:port][/path] with a valid port."""
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 -- raises ValueError for a port that is not 1-65535
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname)


_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "positive": (lambda v: v > 0, "must be greater than 0"),
    "non_negative": (lambda v: v >= 0, "must be 0 or more"),
    "probability": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "temperature": (lambda v: 0 <= v <= 5, "must be between 0 and 5"),
    "non_empty": (lambda v: len(v) > 0, "must not be empty"),
    "stop_strings": (lambda v: all(s for s in v), "must not contain empty strings"),
    "port": (lambda v: 0 < v < 65536, "must be a TCP port (1-65535)"),
    "port_or_off": (lambda v: 0 <= v < 65536, "must be a TCP port (1-65535), or 0 for off"),
    "http_url": (_is_http_url, "must be an http:// or https:// URL"),
    # httpx (Telegram) speaks HTTP and SOCKS to a proxy; aiohttp (Discord) only HTTP, and would
    # speak it to a socks5:// proxy too. Both echo a malformed URL, password included, in
    # their errors: checked here, the error names the key and leaves the value out.
    "proxy": (
        lambda v: _is_proxy_url(v, ("http", "https", "socks5", "socks5h", "socks4")),
        "must be a proxy URL: http|https|socks5://[user:password@]host:port",
    ),
    "http_proxy": (
        lambda v: _is_proxy_url(v, ("http", "https")),
        "must be an HTTP proxy URL: http://[user:password@]host:port",
    ),
}


@dataclass(frozen=True)
class ModelSettings:
    path: str = field(
        default="deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", metadata=_check("non_empty")
    )
    # auto: the fastest format this GPU runs (int4 through humming, else nf4); none on the CPU.
    quantization: Literal["auto", "int4", "fp8", "nf4", "fp4", "int8", "none"] = "auto"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    max_context_tokens: int = field(default=16384, metadata=_check("positive"))
    # Only local files: never reach the Hugging Face hub (set true for air-gapped hosts).
    local_files_only: bool = False


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = field(default=8192, metadata=_check("positive"))
    temperature: float = field(default=0.6, metadata=_check("temperature"))
    top_p: float = field(default=0.95, metadata=_check("probability"))
    stop: tuple[str, ...] = field(default=(), metadata=_check("stop_strings"))
    timeout_seconds: float = field(default=900.0, metadata=_check("positive"))


@dataclass(frozen=True)
class EngineSettings:
    # "local": the model on this machine's GPU; "openai": an OpenAI-compatible server ([openai]).
    backend: Literal["local", "openai"] = "local"
    # 0 = size from the GPU's free memory after loading.
    max_batch_size: int = field(default=0, metadata=_check("non_negative"))
    kv_cache_tokens: int = field(default=0, metadata=_check("non_negative"))
    # Share of the GPU memory left after loading that an automatically sized KV cache may take.
    kv_cache_memory_fraction: float = field(default=0.85, metadata=_check("probability"))
    max_queue: int = field(default=256, metadata=_check("positive"))
    cuda_graphs: bool = True
    seed: int = 0
    # Keep each dialogue's KV cache in its slot after an answer and reuse its common prefix on
    # the next turn (the slot stays free for others, reclaimed least recently used first).
    prefix_reuse: bool = True


@dataclass(frozen=True)
class OpenAISettings:
    """An OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API)."""

    base_url: str = field(default="http://127.0.0.1:8000/v1", metadata=_check("http_url"))
    model: str = ""  # empty = the first id the server lists at GET {base_url}/models
    api_key: str = field(default="", repr=False)  # a secret: never in logs or reprs
    max_concurrency: int = field(default=64, metadata=_check("positive"))
    connect_timeout: float = field(default=10.0, metadata=_check("positive"))
    # The longest the server may stay silent (before the first token or between two chunks).
    read_timeout: float = field(default=300.0, metadata=_check("positive"))


@dataclass(frozen=True)
class MetricsSettings:
    port: int = field(default=0, metadata=_check("port_or_off"))  # 0 = no metrics server
    listen: str = field(default="127.0.0.1", metadata=_check("non_empty"))


@dataclass(frozen=True)
class StorageSettings:
    path: str = field(default="bot.db", metadata=_check("non_empty"))
    # An answer in progress is saved this often: a killed bot loses at most this much of it.
    checkpoint_seconds: float = field(default=2.0, metadata=_check("positive"))


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str = ""
    reasoning: Literal["hidden", "collapsed", "full"] = "collapsed"
    # Longer user messages are refused (the model's context is precious).
    max_message_chars: int = field(default=16000, metadata=_check("positive"))
    # Of the message a user replies to (or quotes), this much goes into their turn; 0 = none.
    reply_context_chars: int = field(default=1000, metadata=_check("non_negative"))
    # Larger attached text files are refused before they are downloaded.
    max_attachment_bytes: int = field(default=65536, metadata=_check("positive"))
    # A 🔄 Regenerate button under each dialogue's latest answer (Telegram and Discord).
    regenerate_button: bool = True
    # ... and longer in the model's tokens (some scripts take a token per character or more).
    max_message_tokens: int = field(default=8000, metadata=_check("positive"))
    # Each user may send this many messages a minute (in bursts up to it); more are refused.
    messages_per_minute: int = field(default=20, metadata=_check("positive"))
    # SIGTERM/SIGINT: how long the bot may take to land the answers in progress (text so far
    # plus a note) before it exits anyway; what it did not land is kept by the checkpoints.
    shutdown_grace_seconds: float = field(default=10.0, metadata=_check("positive"))


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = False
    token: str = field(default="", repr=False)  # a secret: never in logs or reprs
    base_url: str = "https://api.telegram.org/bot"
    # A proxy URL may carry a password: out of reprs, like the token.
    proxy: str = field(default="", repr=False, metadata=_check("proxy"))
    admins: tuple[int, ...] = ()
    allowed_users: tuple[int, ...] = ()  # empty = everyone
    # Chats (groups; a private chat's id is its user's id) the bot answers in; empty = all.
    allowed_chats: tuple[int, ...] = ()
    edit_interval: float = field(default=DeliveryOptions.edit_interval, metadata=_check("positive"))
    group_edits_per_minute: int = field(default=20, metadata=_check("positive"))
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = field(default=8443, metadata=_check("port"))
    webhook_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class DiscordSettings:
    enabled: bool = False
    token: str = field(default="", repr=False)  # a secret: never in logs or reprs
    api_base: str = "https://discord.com/api/v10"
    # A proxy URL may carry a password: out of reprs, like the token.
    proxy: str = field(default="", repr=False, metadata=_check("http_proxy"))
    admins: tuple[int, ...] = ()
    allowed_users: tuple[int, ...] = ()  # empty = everyone
    # Where and to whom the bot answers; each empty list = no restriction of that kind.
    allowed_guilds: tuple[int, ...] = ()
    allowed_channels: tuple[int, ...] = ()  # a thread counts as its parent channel too
    allowed_roles: tuple[int, ...] = ()  # the member has at least one of these roles
    edit_interval: float = field(default=DeliveryOptions.edit_interval, metadata=_check("positive"))
    guild_ids: tuple[int, ...] = ()  # sync slash commands to these guilds (instant); else globally


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" for people, "json" (one object a line) for log collectors.
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    source: str = "(defaults)"  # where the settings came from, for messages

    def __repr__(self) -> str:  # never print tokens
        return f"Settings(source={self.source!r})"


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read `path` (default ./config.toml; missing default file = all defaults) and the env."""
    env = {} if env is None else env
    explicit = path is not None
    path = DEFAULT_CONFIG_PATH if path is None else path
    raw: dict[str, Any] = {}
    source = "(defaults)"
    if path.exists():
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    elif explicit:
        raise ConfigError(f"{path}: no such config file (copy config.example.toml to start)")
    from_env, env_names = _raw_from_env(env)
    merged = _merge(raw, from_env)
    for name in TOKEN_ENV:  # a token from the environment turns its front-end on
        if "token" in from_env.get(name, {}) and "enabled" not in merged[name]:
            merged[name]["enabled"] = True
    settings = _build(Settings, merged, "", source, env_names)
    settings = dataclasses.replace(settings, source=source)
    _check_tokens(settings)
    _check_combinations(settings)
    return settings


def _check_combinations(settings: Settings) -> None:
    source = settings.source
    if settings.telegram.mode == "webhook" and not settings.telegram.webhook_url:
        raise ConfigError(
            f'{source}: telegram.webhook_url is required when telegram.mode = "webhook"'
        )
    if (
        settings.engine.backend == "local"  # a remote engine loads no weights here
        and settings.model.quantization not in ("none", "auto")
        and settings.model.device == "cpu"
    ):
        raise ConfigError(
            f'{source}: model.quantization = "{settings.model.quantization}" needs a CUDA GPU, '
            'but model.device = "cpu"; set quantization = "none" to run on the CPU'
        )


def _check_tokens(settings: Settings) -> None:
    for name, var in TOKEN_ENV.items():
        section = getattr(settings, name)
        if section.enabled and not section.token:
            raise ConfigError(
                f"{settings.source}: [{name}] enabled = true but no token: set [{name}] token "
                f"or the {var} environment variable"
            )


def _raw_from_env(env: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Settings from the environment, as TOML would give them, and the variable of each key.

    `BOT_<SECTION>_<KEY>` sets any key (lists as "[1, 2]" or "1,2"); the usual variables
    TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN and OPENAI_API_KEY set the secrets. The environment
    wins over the file, as Docker users expect.
    """
    sections = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "source"}
    hints = typing.get_type_hints(Settings)
    wanted: dict[tuple[str, str], str] = {}
    for name, var in {**TOKEN_ENV, "openai": OPENAI_KEY_ENV}.items():
        key = "api_key" if name == "openai" else "token"
        if env.get(var, "").strip():
            wanted[(name, key)] = var
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("_")
        if section not in sections or not key:
            raise ConfigError(
                f"environment variable {var}: no such setting (use {ENV_PREFIX}<SECTION>_<KEY>, "
                f"sections: {', '.join(sections)})"
            )
        wanted[(section, key)] = var
    raw: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for (section, key), var in wanted.items():
        fields = {f.name: f for f in dataclasses.fields(hints[section])}
        if key not in fields:
            raise ConfigError(
                f"environment variable {var}: [{section}] has no key {key!r} "
                f"(known: {', '.join(sorted(fields))})"
            )
        hint = typing.get_type_hints(hints[section])[key]
        raw.setdefault(section, {})[key] = _parse_env(env[var].strip(), hint, var, key)
        names[f"{section}.{key}"] = var
    return raw, names


def _parse_env(text: str, hint: Any, var: str, key: str) -> Any:
    """An environment string as the TOML value the key's type expects."""
    if typing.get_origin(hint) is tuple:
        if not text:
            return []
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                raise ConfigError(f"environment variable {var}: not a list") from None
        (item_type, _) = typing.get_args(hint)
        return [_parse_env(item.strip(), item_type, var, key) for item in text.split(",")]
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return text  # refused below with the usual message
    if hint in (int, float):
        try:
            return int(text) if hint is int else float(text)
        except ValueError:
            return text  # refused below with the usual message
    return text


def _merge(base: dict[str, Any], override: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = {
        name: dict(table) if isinstance(table, dict) else table for name, table in base.items()
    }
    for section, values in override.items():
        table = merged.setdefault(section, {})
        if isinstance(table, dict):
            table.update(values)
    for name in TOKEN_ENV:
        merged.setdefault(name, {})
    return merged


def _build(
    cls: type, raw: Any, prefix: str, file_source: str, env_names: Mapping[str, str] = {}
) -> Any:
    """`cls` from TOML-like values; errors name the key and where its value came from."""
    source = file_source
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{prefix}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"[{prefix}] " if prefix else ""
        raise ConfigError(
            f"{source}: unknown key {where}{unknown[0]!r} (known: {', '.join(sorted(fields))})"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key, file_source, env_names)
            continue
        source = f"environment variable {env_names[key]}" if key in env_names else file_source
        converted = _convert(hint, value, key, source)
        rule = fields[name].metadata.get("rule")
        if rule is not None:
            ok, message = _RULES[rule]
            if not ok(converted):
                raise ConfigError(f"{source}: {key} {message} (got {_show(key, value)})")
        values[name] = converted
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{source}: {key} must be one of {choices} (got {_show(key, value)})")
        return value
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list (got {_show(key, value)})")
        return tuple(
            _convert(item_type, item, f"{key}[{i}]", source) for i, item in enumerate(value)
        )
    if origin in (types.UnionType, typing.Union):
        raise NotImplementedError(key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false (got {_show(key, value)})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer (got {_show(key, value)})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number (got {_show(key, value)})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string (got {_show(key, value)})")
        return value
    raise NotImplementedError(f"{key}: {hint}")


def _show(key: str, value: Any) -> str:
    """A value for an error message; secrets are never echoed."""
    if key.endswith(("token", "secret", "proxy", "api_key")):  # a proxy URL may carry a password
        return "<hidden>"
    if isinstance(value, str) and "://" in value and "@" in value:  # user:password@ in a URL
        return "<hidden>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
