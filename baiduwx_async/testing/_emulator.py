"""`run_emulator()` and `RunningEmulator`: an emulator served for the length of a block."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from .._auth import IAMCredentials, OAuthCredentials
from .._client import AsyncClient
from .._limits import NoLimit
from .._retry import RetryPolicy

if TYPE_CHECKING:
    from ..emulator import Emulator, EmulatorConfig

__all__ = ["ASGI_BASE_URL", "INSTANT_RETRIES", "RunningEmulator", "run_emulator"]

ASGI_BASE_URL = "http://emulator.localhost"
"""The base URL of clients of an emulator in ASGI mode (`run_emulator(asgi=True)`)."""

INSTANT_RETRIES = RetryPolicy(initial_backoff=0.0, max_backoff=0.0, max_wait=0.0)
"""Retries without waiting: as many attempts as the default policy, no backoff and no
`Retry-After` wait, for tests that inject faults. `AsyncClient(retry_policy=...)`; a
`RunningEmulator.client()` given it (and no qps, rpm or rate_limiter) also skips the
client's slow-down after rate-limit answers."""
_PACING = frozenset(("qps", "rpm", "rate_limiter"))


class RunningEmulator:
    """An emulator being served, with what a test needs to talk to it.

    Made by `run_emulator()` and the `wenxin_emulator` fixture. `base_url` is where it
    answers (`ASGI_BASE_URL` in ASGI mode), `emulator` the `Emulator` itself; `client()`
    makes `AsyncClient`s pointed at it, all closed when the emulator stops.
    """

    def __init__(self, emulator: Emulator, base_url: str, *, asgi: bool = False) -> None:
        self.emulator = emulator
        self.base_url = base_url
        #: True when served through `httpx.ASGITransport` instead of a socket.
        self.asgi = asgi
        #: `AsyncClient` keywords every `client()` gets unless given others (the pytest
        #: plugin puts `retry_policy=INSTANT_RETRIES` here for `wenxin_instant_retries`).
        self.client_defaults: dict[str, Any] = {}
        self._clients: list[AsyncClient] = []
        self._http_clients: list[httpx.AsyncClient] = []
        self._closed = False

    def __repr__(self) -> str:
        mode = "asgi" if self.asgi else "socket"
        return f"<RunningEmulator {self.base_url} ({mode})>"

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's settings (mutable; see `configure`)."""
        return self.emulator.config

    @property
    def credentials(self) -> OAuthCredentials:
        """An API Key / Secret Key pair the emulator accepts (the first configured one)."""
        for api_key, secret_key in self.emulator.config.credentials.items():
            return OAuthCredentials(api_key, secret_key)
        raise LookupError("the emulator has no OAuth credentials configured")

    @property
    def iam_credentials(self) -> IAMCredentials:
        """An IAM Access Key / Secret Key pair the emulator accepts (the first configured)."""
        for access_key, secret_key in self.emulator.config.iam_credentials.items():
            return IAMCredentials(access_key, secret_key)
        raise LookupError("the emulator has no IAM credentials configured")

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (`Emulator.stats`): calls, outcomes per endpoint, faults…"""
        return self.emulator.stats()

    def configure(self, **changes: Any) -> None:
        """Change emulator settings now (`Emulator.configure`), e.g. `configure(qps=5)`."""
        self.emulator.configure(**changes)

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far: the next call with one gets 110."""
        self.emulator.revoke_tokens()

    def reset_stats(self) -> None:
        """Zero the counters."""
        self.emulator.reset_stats()

    def reset_limits(self) -> None:
        """Empty the rate windows and quota counts."""
        self.emulator.reset_limits()

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A bare `httpx.AsyncClient` with `base_url` set to the emulator (through the ASGI
        app in ASGI mode); closed when the emulator stops."""
        self._check_open()
        kwargs.setdefault("base_url", self.base_url)
        if self.asgi:
            kwargs.setdefault("transport", httpx.ASGITransport(app=self.emulator.app))
        http = httpx.AsyncClient(**kwargs)
        self._http_clients.append(http)
        return http

    def client(self, **kwargs: Any) -> AsyncClient:
        """An `AsyncClient` pointed at the emulator with its credentials.

        Keywords go to `AsyncClient` and win over those defaults (pass
        `credentials=emu.iam_credentials` to sign requests instead). In ASGI mode the
        client gets an `http_client` on the emulator's app unless you pass your own.
        Closed when the emulator stops, if you did not close it before.
        """
        self._check_open()
        for name, value in self.client_defaults.items():
            kwargs.setdefault(name, value)
        if kwargs.get("retry_policy") is INSTANT_RETRIES and not _PACING & kwargs.keys():
            # Instant retries wait for nothing: not for the slow-down after a 429 either.
            kwargs["rate_limiter"] = NoLimit()
        kwargs.setdefault("credentials", self.credentials)
        kwargs.setdefault("base_url", self.base_url)
        if self.asgi and kwargs.get("http_client") is None:
            kwargs["http_client"] = self.http_client(base_url=ASGI_BASE_URL)
        client = AsyncClient(**kwargs)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client made by `client()` and `http_client()`."""
        self._closed = True
        clients, self._clients = self._clients, []
        https, self._http_clients = self._http_clients, []
        for client in clients:
            await client.aclose()
        for http in https:
            await http.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this emulator has stopped")


def _require_asyncio() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "run_emulator() serves the emulator on a socket with uvicorn, which runs on "
            "asyncio only; under trio use run_emulator(asgi=True) (for the wenxin_emulator "
            "fixture: @pytest.mark.wenxin_emulator(asgi=True)), which needs no socket"
        ) from None


@contextlib.asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    asgi: bool = False,
    clock: Callable[[], float] | None = None,
    **config_fields: Any,
) -> AsyncIterator[RunningEmulator]:
    """Run an emulator for the duration of an `async with` block.

    `config` and/or `EmulatorConfig` fields as keywords (`qps=20`, `seed=1`,
    `faults={"http_503": 0.2}`; keywords win over `config`'s values). `clock` replaces the
    emulator's clock (unix seconds; token expiry, signature times, rate windows).

    By default the emulator is served by uvicorn on a free 127.0.0.1 port in the running
    event loop (asyncio only: under trio this raises `RuntimeError`). With `asgi=True`
    nothing is served: clients from `emu.client()` reach the app through
    `httpx.ASGITransport`, under asyncio or trio. Clients made by `emu.client()` are closed
    on exit.
    """
    from ..emulator import Emulator, EmulatorConfig

    if config is None:
        config = EmulatorConfig(**config_fields)
    elif config_fields:
        config = attrs.evolve(config, **config_fields)
    emulator = Emulator(config) if clock is None else Emulator(config, clock=clock)
    if asgi:
        running = RunningEmulator(emulator, ASGI_BASE_URL, asgi=True)
        try:
            yield running
        finally:
            await running.aclose()
        return

    _require_asyncio()
    from ..emulator import serve

    async with serve(emulator) as base_url:
        running = RunningEmulator(emulator, base_url)
        try:
            yield running
        finally:
            await running.aclose()
