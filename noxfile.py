"""Developer sessions: `nox -s tests`, `lint`, `typecheck`, `bench`, `demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "baiduwx_async")


@nox.session
def bench(session: nox.Session) -> None:
    """All benchmarks as one markdown table; `nox -s bench -- --quick` for a smoke run."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The offline demo: the emulator in-process, a chat, a stream and a batch."""
    session.install("-e", ".[cli]")
    session.run("baiduwx", "demo")
