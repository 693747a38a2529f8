"""API keys: who is calling (authentication) and whether they may (authorization by role and collection scope).

A caller sends `authorization: Bearer <key>`. The server keeps only the sha256 of each key; the presented key is
hashed and compared with every configured hash in constant time (no early exit, no timing difference between a near
and a far miss). Keys never reach logs, metrics, the audit log or error messages: only their configured names do.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from embedsvc.errors import EmbedsvcError, Hint, Reason
from embedsvc.settings import ApiKey, Role
from embedsvc.settings import key_hash as key_hash  # the hash keys are configured as (tests and tools use it here)

# New keys: a recognisable prefix (so secret scanners and people can tell what it is) and 256 random bits.
KEY_PREFIX = "esk_"
_RANK = {Role.READ: 0, Role.WRITE: 1, Role.ADMIN: 2}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the key's name, role and collection scope (globs; empty: every collection)."""

    name: str
    role: Role
    scope: tuple[str, ...] = ()

    def may(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def may_touch(self, collection: str) -> bool:
        return not self.scope or any(fnmatch.fnmatchcase(collection, pattern) for pattern in self.scope)


# Everything is allowed when auth is off (and for the caller of an open method).
ANONYMOUS = Principal("anonymous", Role.ADMIN)
# The caller of the RPC being served (set by the interceptor for the servicers' listings).
CURRENT: ContextVar[Principal] = ContextVar("embedsvc_principal", default=ANONYMOUS)


def visible(collection: str) -> bool:
    """Whether the current caller may see this collection (listings leave out the others)."""
    return CURRENT.get().may_touch(collection)


class KeyRing:
    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), Principal(k.name, k.role, k.collections)) for k in keys]

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `authorization` header; UNAUTHENTICATED when it is missing, malformed or unknown."""
        if authorization is None:
            raise _unauthenticated(
                "no API key: send the metadata `authorization: Bearer <key>`", "missing", Hint.SEND_API_KEY
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip() or len(key) > 1024:
            raise _unauthenticated("the authorization metadata must be `Bearer <key>`", "malformed")
        digest = hashlib.sha256(key.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for stored, principal in self._keys:  # every key is compared: the time does not depend on which matched
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise _unauthenticated("unknown API key", "unknown")
        return found


def authorize(principal: Principal, role: Role, collections: Iterable[str]) -> None:
    """PERMISSION_DENIED unless the principal's role and scope allow the call."""
    if not principal.may(role):
        raise EmbedsvcError(
            Reason.PERMISSION_DENIED,
            f"key '{principal.name}' has role {principal.role.value}; this call needs {role.value}",
            metadata={"key": principal.name, "role": principal.role.value, "required": role.value},
        )
    for collection in collections:
        if collection and not principal.may_touch(collection):
            raise EmbedsvcError(
                Reason.PERMISSION_DENIED,
                f"key '{principal.name}' may not touch collection '{collection}'",
                metadata={"key": principal.name, "collection": collection},
            )


def _unauthenticated(message: str, problem: str, hint: Hint | None = None) -> EmbedsvcError:
    return EmbedsvcError(Reason.UNAUTHENTICATED, message, metadata={"problem": problem}, hint=hint)
