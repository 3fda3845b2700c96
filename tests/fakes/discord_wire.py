"""Discord's wire formats as the fake speaks them: errors, bodies, limits, gateway compression."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .discord_state import MAX_CONTENT, MAX_EMBED_DESCRIPTION, MAX_EMBED_TITLE, MAX_EMBEDS

_COMMAND_NAME = re.compile(r"[-_'\w]{1,32}")


def json_dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------- errors and faults


class ApiError(Exception):
    """An error the fake answers the way Discord does: status plus JSON {message, code}."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return json_response(body, status=self.status)


def form_error(path: str, code: str, message: str) -> ApiError:
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass
class Body:
    json: Any
    files: list[dict[str, Any]]


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # Exactly "application/json": discord.py compares the header literally (no charset).
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json_dumps(data).encode(), status=status, headers=all_headers)


async def read_body(request: web.Request) -> Body:
    """JSON body, or multipart payload_json plus uploaded files (as discord.py sends them)."""
    if not request.body_exists:
        return Body(None, [])
    if request.content_type == "multipart/form-data":
        form = await request.post()
        payload, files = None, []
        for name, value in form.items():
            if isinstance(value, web.FileField):
                size = len(value.file.read())
                files.append(
                    {
                        "field": name,
                        "filename": value.filename,
                        "size": size,
                        "content_type": value.content_type,
                    }
                )
            elif name == "payload_json":
                payload = json.loads(value if isinstance(value, str) else bytes(value).decode())
        return Body(payload, files)
    raw = await request.read()
    try:
        return Body(json.loads(raw), [])
    except ValueError as error:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from error


def validate_message(
    data: dict[str, Any], path: str, *, require_body: bool, files: list[dict[str, Any]]
) -> None:
    """Discord's limits: content <= 2000, embeds <= 10 with short titles/descriptions."""
    prefix = f"{path}." if path else ""
    content = data.get("content")
    if content is not None and len(content) > MAX_CONTENT:
        raise form_error(
            f"{prefix}content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    embeds = data.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        raise form_error(
            f"{prefix}embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    for index, embed in enumerate(embeds):
        for key, limit in (("title", MAX_EMBED_TITLE), ("description", MAX_EMBED_DESCRIPTION)):
            if len(embed.get(key) or "") > limit:
                raise form_error(
                    f"{prefix}embeds.{index}.{key}",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
    has_body = (
        content
        or embeds
        or data.get("components")
        or files
        or data.get("sticker_ids")
        or data.get("poll")
    )
    if require_body and not has_body:
        raise ApiError(400, 50006, "Cannot send an empty message")


def validate_command(command: dict[str, Any], path: str) -> None:
    name = command.get("name") or ""
    kind = command.get("type", 1)
    if kind == 1 and (not _COMMAND_NAME.fullmatch(name) or name != name.lower()):
        raise form_error(
            f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}"
        )
    if kind == 1 and not 1 <= len(command.get("description") or "") <= 100:
        raise form_error(
            f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    options = command.get("options") or []
    if len(options) > 25:
        raise form_error(
            f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
        )
    for index, option in enumerate(options):
        validate_command(option | {"type": 1}, f"{path}.options.{index}")


# ----------------------------------------------------------------------------- gateway compression


def make_encoder(compress: str | None) -> Callable[[str], str | bytes]:
    """Transport compression as discord.py asks for it in the gateway URL query."""
    if not compress:
        return lambda text: text
    if compress == "zlib-stream":
        zctx = zlib.compressobj()
        # One shared stream; each message ends with Z_SYNC_FLUSH (00 00 ff ff).
        return lambda text: zctx.compress(text.encode()) + zctx.flush(zlib.Z_SYNC_FLUSH)
    if compress == "zstd-stream":
        return _zstd_encoder()
    raise ValueError(f"unsupported compress={compress!r}")


def _zstd_encoder() -> Callable[[str], bytes]:
    try:
        from compression.zstd import ZstdCompressor  # type: ignore[import-not-found]
    except ImportError:
        import zstandard  # type: ignore[import-not-found]

        zobj = zstandard.ZstdCompressor().compressobj()
        return lambda text: (
            zobj.compress(text.encode()) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        )
    zctx = ZstdCompressor()
    return lambda text: zctx.compress(text.encode(), mode=ZstdCompressor.FLUSH_BLOCK)
