"""Pages of lists that can grow (AIP-158): page sizes, and opaque, signed page tokens bound to their listing.

A token records where the previous page stopped (the key of its last entry, so inserts and deletes between pages
never repeat or skip what stayed), the listing it belongs to (a method and its filter: a token from another
collection's export or another model's directions is refused), and an HMAC-SHA256 under the server's secret, so a
forged or damaged token is refused with INVALID_ARGUMENT / INVALID_PAGE_TOKEN. The secret is kept in the data
directory, so tokens (and export resume tokens) stay valid across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from embedsvc.durable import write_atomic
from embedsvc.errors import EmbedsvcError, Reason, invalid

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 100
SECRET_FILE = "page-tokens.key"  # noqa: S105 - the file name, not its content
_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def page_size(requested: int, maximum: int, field: str = "page_size") -> int:
    """0 means the default; sizes above the maximum are treated as the maximum (AIP-158); negative is refused."""
    if requested < 0:
        raise invalid(field, f"page_size must not be negative, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, maximum)


@dataclass(frozen=True)
class Page(Generic[T]):
    entries: list[T]
    next_page_token: str


class PageTokens:
    """Issues and checks page tokens under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the page-token secret must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> PageTokens:
        """The secret in `<data_dir>/page-tokens.key`, made (32 random bytes, mode 0600) on first use."""
        path = data_dir / SECRET_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return cls(path.read_bytes())

    @staticmethod
    def _listing(listing: str) -> str:
        return hashlib.sha256(listing.encode("utf-8")).hexdigest()[:16]

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def issue(self, listing: str, position: str) -> str:
        """The token that continues `listing` after `position`."""
        payload = json.dumps({"v": _VERSION, "l": self._listing(listing), "p": position}, separators=(",", ":"))
        raw = payload.encode("utf-8")
        return f"{_b64(raw)}.{_b64(self._sign(raw))}"

    def position(self, token: str, listing: str, field: str = "page_token") -> str | None:
        """Where `listing` continues; None for an empty token (the first page). INVALID_PAGE_TOKEN otherwise."""
        if not token:
            return None
        try:
            encoded, signature = token.split(".")
            raw = _unb64(encoded)
            valid = hmac.compare_digest(_unb64(signature), self._sign(raw))
            data = json.loads(raw) if valid else None
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("p"), str):
            raise EmbedsvcError(
                Reason.INVALID_PAGE_TOKEN, "the page token is corrupt or was not issued by this server", field=field
            )
        if data.get("l") != self._listing(listing):
            raise EmbedsvcError(
                Reason.INVALID_PAGE_TOKEN,
                "the page token belongs to another listing (another method, collection or filter)",
                field=field,
            )
        return str(data["p"])

    def page(
        self,
        entries: Sequence[T],
        key: Callable[[T], str],
        *,
        listing: str,
        token: str,
        size: int,
        descending: bool = False,
    ) -> Page[T]:
        """One page of `entries` (in listing order, keys unique): those after the token's key. When that entry is gone,
        the listing continues at the first key past it (entries sorted by key, `descending` or not)."""
        after = self.position(token, listing)
        start = 0
        if after is not None:
            keys = [key(e) for e in entries]
            if after in keys:
                start = keys.index(after) + 1
            else:
                start = next((i for i, k in enumerate(keys) if (k < after if descending else k > after)), len(keys))
        chunk = list(entries[start : start + size])
        more = start + size < len(entries)
        return Page(chunk, self.issue(listing, key(chunk[-1])) if more and chunk else "")
