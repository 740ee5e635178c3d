"""`Emulator`: one local Wenxin Workshop server's state, settings and ASGI app."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.applications import Starlette

from ._app import build_app
from ._config import EmulatorConfig
from ._core import EmulatorState

__all__ = ["Emulator", "create_app"]


class Emulator(EmulatorState):
    """A local Wenxin Workshop (Qianfan v1) server: serve `emulator.app` with any ASGI server.

    `clock` (unix seconds) decides token expiry, bce-auth-v1 time checks, `created` fields
    and the rate windows; tests inject a fake one.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config, clock=clock)
        self.app: Starlette = build_app(self)


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """The ASGI app of a new `Emulator` (for `uvicorn module:app`-style serving)."""
    return Emulator(config).app
