"""Reading the store from the end-to-end tests, where storing an answer follows its showing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def once_ended(read: Callable[[], Awaitable[list[Any]]], timeout: float = 10.0) -> list[Any]:
    """`read()` (a dialogue's stored messages), once its last answer is stored as ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stored := await read())[-1].status == "streaming":
        assert loop.time() < deadline, "the answer was never stored as ended"
        await asyncio.sleep(0.02)
    return stored
