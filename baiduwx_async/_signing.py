"""bce-auth-v1 request signing and verification (docs/protocol.md §2b).

Pure (no I/O, clock or event loop): the client calls :func:`sign`, the emulator :func:`verify`.

    authStringPrefix = "bce-auth-v1/" AK "/" timestamp "/" expirationSeconds
    signingKey       = lowerhex(HMAC-SHA256(key=SK, msg=authStringPrefix))
    CanonicalRequest = METHOD "\\n" CanonicalURI "\\n" CanonicalQueryString "\\n" CanonicalHeaders
    signature        = lowerhex(HMAC-SHA256(key=signingKey hex text, msg=CanonicalRequest))
    Authorization    = authStringPrefix "/" signedHeaders "/" signature

Components are UriEncode'd (UTF-8; ``A-Za-z0-9-._~`` kept, other bytes ``%XX``). Signed headers:
headersToSign (default host, content-length/-type/-md5; signedHeaders then "") plus all x-bce-*.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Iterable
from urllib.parse import quote

import attrs

_AUTH_VERSION = "bce-auth-v1"
_DEFAULT_HEADERS_TO_SIGN = frozenset({"host", "content-length", "content-type", "content-md5"})
_TIMESTAMP_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    # quote() always keeps exactly A-Z a-z 0-9 - . _ ~ (Python >= 3.7), encodes UTF-8 bytes as
    # uppercase %XX and never emits "+"; tests pin it against a byte-wise reference.
    return quote(value, safe="/" if keep_slash else "")


def format_timestamp(unix_seconds: float) -> str:
    # Explicit widths: strftime("%Y") does not zero-pad years below 1000 on glibc.
    return "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(*time.gmtime(unix_seconds)[:6])


def _parse_timestamp(value: str) -> int:
    seconds = None
    if match := _TIMESTAMP_RE.fullmatch(value):
        with contextlib.suppress(ValueError):  # month 0/13, day 0 or year 0
            seconds = calendar.timegm((*map(int, match.groups()), 0, 0, 0))
    # timegm() silently normalises e.g. Feb 30 or second 60; the round trip rejects those.
    if seconds is None or format_timestamp(seconds) != value:
        raise ValueError(f"timestamp must be a UTC 'YYYY-MM-DDThh:mm:ssZ' time, got {value!r}")
    return seconds


def canonical_uri(path: str) -> str:
    return uri_encode(path, keep_slash=True) or "/"


def canonical_query_string(query: Iterable[tuple[str, str]]) -> str:
    # Encoded pairs are ASCII, so str ordering is the byte-wise ordering the spec asks for.
    pairs = (f"{uri_encode(k)}={uri_encode(v)}" for k, v in query if k.lower() != "authorization")
    return "&".join(sorted(pairs))


def canonical_headers(
    headers: Iterable[tuple[str, str]], headers_to_sign: Collection[str] | None
) -> tuple[str, list[str]]:
    to_sign = _DEFAULT_HEADERS_TO_SIGN if headers_to_sign is None else headers_to_sign
    wanted = {name.strip().lower() for name in to_sign}
    lines: list[str] = []
    names: set[str] = set()
    for raw_name, raw_value in headers:
        name, value = raw_name.strip().lower(), raw_value.strip()
        if not value or name == "authorization":
            continue
        # Like BCE-GO, x-bce-request-id is only exempt from the automatic x-bce-* rule.
        if name in wanted or (name.startswith("x-bce-") and name != "x-bce-request-id"):
            lines.append(f"{uri_encode(name)}:{uri_encode(value)}")
            names.add(name)
    return "\n".join(sorted(lines)), sorted(names)


def _join_request(method: str, path: str, query_text: str, header_text: str) -> str:
    return f"{method}\n{canonical_uri(path)}\n{query_text}\n{header_text}"


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    headers_to_sign: Collection[str] | None,
) -> str:
    header_text = canonical_headers(headers, headers_to_sign)[0]
    return _join_request(method, path, canonical_query_string(query), header_text)


def _hmac_hex(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def signing_key(secret_key: str, auth_string_prefix: str) -> str:
    return _hmac_hex(secret_key, auth_string_prefix)


def sign(
    *,
    access_key: str,
    secret_key: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    timestamp: float,
    expiration: int = 300,
    headers_to_sign: Collection[str] | None = None,
) -> str:
    """Return the ``Authorization`` value; signedHeaders is empty iff headers_to_sign is None."""
    if not access_key or "/" in access_key or expiration < 0:
        raise ValueError("access key must be non-empty without '/', and expiration >= 0")
    prefix = f"{_AUTH_VERSION}/{access_key}/{format_timestamp(timestamp)}/{expiration}"
    header_text, signed_names = canonical_headers(headers, headers_to_sign)
    if headers_to_sign is not None and not signed_names:
        # An empty signedHeaders means "the defaults", so signing nothing is unrepresentable.
        raise ValueError("none of headers_to_sign is present with a non-empty value")
    signed_headers = "" if headers_to_sign is None else ";".join(signed_names)
    request = _join_request(method, path, canonical_query_string(query), header_text)
    return f"{prefix}/{signed_headers}/{_hmac_hex(signing_key(secret_key, prefix), request)}"


@attrs.frozen
class ParsedAuthorization:
    """The parts of a ``bce-auth-v1/AK/timestamp/expiration/signedHeaders/signature`` value."""

    access_key: str
    timestamp: str
    expiration: int
    signed_headers: tuple[str, ...]
    signature: str

    def issued_at(self) -> float:
        return float(_parse_timestamp(self.timestamp))


def parse_authorization(value: str) -> ParsedAuthorization:
    parts = value.split("/")
    if len(parts) != 6:
        raise ValueError(f"authorization must have 6 '/'-separated parts, got {len(parts)}")
    version, access_key, timestamp, expiration, signed, signature = parts
    if version != _AUTH_VERSION:
        raise ValueError(f"authorization must start with {_AUTH_VERSION!r}, got {version!r}")
    if not access_key:
        raise ValueError("authorization has an empty access key")
    _parse_timestamp(timestamp)
    if not (expiration.isascii() and expiration.isdigit()):
        raise ValueError(f"expiration must be a non-negative integer, got {expiration!r}")
    names = tuple(signed.split(";")) if signed else ()
    if "" in names:
        raise ValueError(f"signed headers contain an empty name: {signed!r}")
    if not _SIGNATURE_RE.fullmatch(signature):
        raise ValueError("signature must be 64 lowercase hex digits")
    return ParsedAuthorization(access_key, timestamp, int(expiration), names, signature)


def verify(
    authorization: str,
    *,
    secret_for: Callable[[str], str | None],
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    now: float,
    skew: float = 300.0,
) -> str | None:
    """Return None if valid, else a short reason (docs/protocol.md §2b "Emulator verification")."""
    try:
        auth = parse_authorization(authorization)
    except ValueError:
        return "malformed authorization"
    secret = secret_for(auth.access_key)
    if secret is None:
        return "unknown access key"
    issued = auth.issued_at()
    if not issued - skew <= now <= issued + auth.expiration:
        return "signature expired"
    # Reuse the prefix exactly as sent (e.g. "0300" must not become "300").
    key = signing_key(secret, authorization.rsplit("/", 2)[0])
    listed = {name.strip().lower() for name in auth.signed_headers}
    wanted = listed or _DEFAULT_HEADERS_TO_SIGN
    received = list(headers)
    # Some signers sign every x-bce-* present (BCE-GO, ours), others only what they list.
    only_listed = [(n, v) for n, v in received if n.strip().lower() in wanted]
    query_text = canonical_query_string(query)
    for header_text in {canonical_headers(h, wanted)[0] for h in (received, only_listed)}:
        expected = _hmac_hex(key, _join_request(method, path, query_text, header_text))
        if hmac.compare_digest(expected, auth.signature):
            return None
    return "signature does not match"
