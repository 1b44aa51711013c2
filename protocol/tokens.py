"""API-key tokens: ``gf_`` + 32 base62 characters (DESIGN §2, §4).

Only the SHA-256 of a token is ever stored; the display prefix lets an operator tell
keys apart in ``keys list`` without revealing them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final

TOKEN_PREFIX: Final = "gf_"  # noqa: S105 (a format marker, not a secret)
TOKEN_BODY_LENGTH: Final = 32
TOKEN_LENGTH: Final = len(TOKEN_PREFIX) + TOKEN_BODY_LENGTH
BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DISPLAY_PREFIX_LENGTH: Final = 8  # "gf_" + 5 characters: ~29 bits, enough to tell keys apart

_TOKEN = re.compile(r"gf_[0-9A-Za-z]{32}", re.ASCII)
SCOPES: Final = ("admin", "read", "write")  # admin: alert rules (create, change, delete)


def generate_token() -> str:
    """A new random token (190 bits of entropy from the OS CSPRNG)."""
    return TOKEN_PREFIX + "".join(secrets.choice(BASE62) for _ in range(TOKEN_BODY_LENGTH))


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: the only form a token is stored in."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_PREFIX_LENGTH]


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"write,read"`` -> ``("read", "write")``; raises ValueError on unknown scopes."""
    scopes = {part.strip() for part in text.split(",") if part.strip()}
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("at least one scope is required")
    return tuple(sorted(scopes))


_TOKEN_RUN_TEXT = re.compile(r"gf_[0-9A-Za-z]{32}", re.ASCII)
_TOKEN_RUN_BYTES = re.compile(rb"gf_[0-9A-Za-z]{32}")


def contains_token(name: bytes | str) -> bool:
    """True if a token-shaped run (``gf_`` + 32 base62) stands anywhere in ``name``: a
    key must never become part of a metric name every read key can list, wherever a
    typo or a misconfigured client prefix put it (``app.gf_<32>.hits``)."""
    if isinstance(name, bytes):
        return b"gf_" in name and _TOKEN_RUN_BYTES.search(name) is not None
    return "gf_" in name and _TOKEN_RUN_TEXT.search(name) is not None


def redact_tokens(text: str) -> str:
    """``text`` with every token-shaped run (anywhere: inside a name, after a typo) cut
    to its display prefix + "...": for log lines and error messages, which never show
    a whole token."""
    return _TOKEN_RUN_TEXT.sub(lambda m: display_prefix(m.group()) + "...", text)


def redact_tokens_bytes(data: bytes) -> bytes:
    """``redact_tokens`` for raw input (a line sample in a drop log)."""
    return _TOKEN_RUN_BYTES.sub(lambda m: m.group()[:DISPLAY_PREFIX_LENGTH] + b"...", data)
