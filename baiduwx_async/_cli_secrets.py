"""
Secrets the `baiduwx` command accepts, kept off the command line where it can be.

Every user of a machine can read the command lines of its processes (`ps`, `/proc`), so
an option that carries a secret also reads it from an environment variable, and warns,
without echoing the secret, when it was given on the command line after all.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

__all__ = ["REDIS_URL_ENV", "url_has_password", "url_option"]

#: Where `--redis URL` is read from when the option is not given.
REDIS_URL_ENV = "BAIDUWX_REDIS_URL"


def url_has_password(url: str) -> bool:
    """Whether a URL carries a password: `scheme://[user]:password@host` or `?password=`."""
    try:
        parts = urlsplit(url)
        in_netloc = bool(parts.password)
    except ValueError:  # a malformed port: the URL is refused later, where it is used
        parts, in_netloc = urlsplit(url.split("@")[-1]), "@" in url
    return in_netloc or bool(parse_qs(parts.query).get("password"))


def url_option(
    given: str | None, *, option: str, env: str, stderr: TextIO | None = None
) -> str | None:
    """The value of a URL option that may hold a password: the command line's, else the
    environment's. A password on the command line is used, with a warning."""
    if given is None:
        return os.environ.get(env) or None
    if url_has_password(given):
        print(
            f"baiduwx: warning: the {option} URL carries a password, which other users of "
            f"this machine can read in the process list; set {env} instead",
            file=stderr or sys.stderr,
        )
    return given
