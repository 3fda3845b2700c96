"""Front-end test defaults shared by every module here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _frontend_defaults(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    # PTB 22 warns on every RetryAfter unless it may give retry_after as a timedelta.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    yield
    # A test that slowed the module's scripted model down leaves it at full speed.
    if "scripted" in request.fixturenames:
        throttle = getattr(request.getfixturevalue("scripted"), "throttle", None)
        if throttle is not None:
            throttle.delay = 0.0
            gate = getattr(throttle, "gate", None)  # a local model's (the remote Pace has none)
            if gate is not None:
                gate.set()
