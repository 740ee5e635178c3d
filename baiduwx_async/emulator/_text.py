"""Deterministic answers: readable English sentences seeded by a hash of the request input.

The same kind, endpoint and input always give the same sentences. A stream sends one
sentence per chunk; every sentence after the first starts with a space, so the chunks joined
are exactly the non-stream `result`, and tokens add up across chunks.

Tokens are counted simply: every CJK ideograph is one token, and so is every other run of
non-space characters (a word with its punctuation).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import threading

import attrs

__all__ = ["Answer", "count_tokens", "generate", "truncate"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def count_tokens(text: str) -> int:
    """Tokens in `text` (CJK ideographs one each, other non-space runs one each)."""
    if text.isascii():
        # No ideographs: the tokens are the runs split() finds (both use str.isspace()),
        # found several times faster than by the regex.
        return len(text.split())
    return len(_TOKEN_RE.findall(text))


_ADJECTIVES = (
    "quiet", "bright", "ancient", "careful", "gentle", "modern", "simple", "useful", "steady",
    "curious", "patient", "small", "large", "clear", "warm", "famous", "distant", "busy",
    "narrow", "broad", "remarkable", "familiar", "efficient", "reliable", "open",
)  # fmt: skip
_NOUNS = (
    "river", "mountain", "city", "garden", "library", "engineer", "teacher", "machine",
    "bridge", "market", "village", "student", "museum", "harbor", "forest", "road", "wall",
    "tower", "festival", "recipe", "model", "question", "answer", "journey", "system",
)  # fmt: skip
_PLURALS = tuple(
    n[:-1] + "ies" if n.endswith("y") and not n.endswith("ey") else n + "s" for n in _NOUNS
)
_VERBS = (
    ("connects", "connect"), ("protects", "protect"), ("describes", "describe"),
    ("follows", "follow"), ("supports", "support"), ("welcomes", "welcome"),
    ("explains", "explain"), ("improves", "improve"), ("shapes", "shape"),
    ("reflects", "reflect"), ("crosses", "cross"), ("guides", "guide"), ("serves", "serve"),
    ("remembers", "remember"), ("changes", "change"),
)  # fmt: skip
_ADVERBS = (
    "Today", "Over time", "In many ways", "As a rule", "Every morning", "In practice",
    "Long ago", "For most visitors", "Above all", "In the end", "Sometimes", "Usually",
)  # fmt: skip
_PREPOSITIONS = ("near", "beyond", "across", "beside", "through", "around", "inside", "along")
_TIMES = ("season", "year", "day", "week", "evening", "spring", "summer", "winter")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _sentence(rng: random.Random) -> str:
    adj1, adj2 = rng.choice(_ADJECTIVES), rng.choice(_ADJECTIVES)
    i, j = rng.randrange(len(_NOUNS)), rng.randrange(len(_NOUNS))
    verb_s, verb = rng.choice(_VERBS)
    form = rng.randrange(5)
    if form == 0:
        text = f"the {adj1} {_NOUNS[i]} {verb_s} {_a(adj2)} {_NOUNS[j]}."
    elif form == 1:
        text = (
            f"{rng.choice(_ADVERBS)}, the {_NOUNS[i]} {verb_s} the {_NOUNS[j]} "
            f"{rng.choice(_PREPOSITIONS)} the {adj2} {rng.choice(_NOUNS)}."
        )
    elif form == 2:
        text = f"many {adj1} {_PLURALS[i]} {verb} {adj2} {_PLURALS[j]} every {rng.choice(_TIMES)}."
    elif form == 3:
        prep = rng.choice(_PREPOSITIONS)
        text = f"it is {adj1} to {verb} the {_NOUNS[i]} {prep} {_a(adj2)} {_NOUNS[j]}."
    else:
        text = f"{_a(adj1)} {_NOUNS[i]} often {verb_s} the {_PLURALS[j]}, and that is {adj2}."
    return text[0].upper() + text[1:]


@attrs.frozen
class Answer:
    """A generated answer: one piece per stream chunk, with token counts."""

    pieces: tuple[str, ...]
    piece_tokens: tuple[int, ...]
    text: str
    tokens: int
    #: The last chunk's (and the plain answer's) `finish_reason`.
    finish_reason: str = "normal"
    is_truncated: bool = False
    #: `{"name", "arguments", "thoughts"}` of a function call (then `text` is "").
    function_call: dict[str, str] | None = attrs.field(default=None, eq=False)
    #: `{"search_results": [{"index", "url", "title"}]}` of an answer with citations.
    search_info: dict[str, object] | None = attrs.field(default=None, eq=False)

    @property
    def plain(self) -> bool:
        """An answer of generated text only, with nothing an ERNIE field changed."""
        return (
            self.finish_reason == "normal"
            and self.function_call is None
            and self.search_info is None
        )


def truncate(pieces: list[str], piece_tokens: list[int], limit: int) -> tuple[list[str], list[int]]:
    """The pieces cut after `limit` tokens (counted as `count_tokens` does)."""
    out: list[str] = []
    out_tokens: list[int] = []
    left = limit
    for piece, tokens in zip(pieces, piece_tokens, strict=True):
        if tokens <= left:
            out.append(piece)
            out_tokens.append(tokens)
            left -= tokens
            continue
        if left > 0:
            ends = [match.end() for match in _TOKEN_RE.finditer(piece)]
            out.append(piece[: ends[left - 1]])
            out_tokens.append(left)
        break
    return out, out_tokens


#: One generator per thread, reseeded for every answer: seeding is the same as in
#: `random.Random(seed)`, without building a new one (and its first seeding) each time.
_rngs = threading.local()


# Small: a miss (every request of a benchmark with distinct prompts) costs more in a
# large cache, and tests and benchmarks repeat only a handful of inputs.
@functools.lru_cache(maxsize=256)
def generate(seed_text: str, sentences_min: int, sentences_max: int) -> Answer:
    """The answer for `seed_text` (kind, endpoint and input, joined by the caller)."""
    digest = hashlib.sha256(seed_text.encode("utf-8", "surrogatepass")).digest()
    rng: random.Random | None = getattr(_rngs, "rng", None)
    if rng is None:
        rng = _rngs.rng = random.Random()
    rng.seed(int.from_bytes(digest[:16], "big"))
    count = rng.randint(sentences_min, sentences_max)
    sentences = [_sentence(rng) for _ in range(count)]
    pieces = (sentences[0], *(" " + s for s in sentences[1:]))
    piece_tokens = tuple(count_tokens(p) for p in pieces)
    return Answer(pieces, piece_tokens, "".join(pieces), sum(piece_tokens))
