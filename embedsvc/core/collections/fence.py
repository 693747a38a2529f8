"""The re-embed fence: what every replica's writes to a collection under re-embed must respect, so that no
acknowledged write misses the new collection, whichever replica takes it (reembed.py runs the operation).

A re-embed keeps one record per source collection in the state replicas share (`index/state.Records`, kind
"reembeds"; a file in the data directory, or a row in Milvus when replicas share collections there), naming its
operation, the target and a state:
- `journal` (from before the fill to the fence): every write to the source by a replica that does not run the
  operation appends the ids it writes to a shared journal (kind "reembed-journal") *before* it commits; the operation
  takes them, round after round, and makes the target agree with the source's current state for each (the replica
  running it records its own writes in its gate's watch, gates.py, instead).
- `fenced` (the last catch-up and the switch): every write to the source is refused with UNAVAILABLE /
  COLLECTION_SWITCHING, retryable, nothing written; the retry lands in the new collection once the alias is switched.
- `switched` (after the switch, for at least an alias cache's lifetime plus a lease): a write addressed through an
  alias that the re-embed switched, but resolved by a stale alias cache to the old collection, is refused the same way
  (and the replica's alias cache is read again, so the retry resolves to the new collection). A write naming the old
  collection itself is the caller's choice and goes there.
- `done`: the operation ended (switched, cancelled or failed); nothing is asked of writes. The record stays (a small
  one per source) so that a slow write can tell that no re-embed ran meanwhile.

Timing is a lease. A replica reads the records at most every `lease_s` (`LEASE_S`, 1 s, as long as the alias cache
keeps aliases) and trusts what it read for that long, measured on its monotonic clock from *before* the read; the
operation, after writing a state, waits `SETTLE` leases on its own monotonic clock before relying on it (every
replica has read it by then, with room for clocks that run at slightly different rates). A write whose commit ends
after its lease ran out cannot know whether the operation relied on a newer state meanwhile: it reads the record again,
and is acknowledged only if nothing the operation relies on can have changed (the same state of the same setting, or
its ids journaled for the setting now in force); else it is refused as COLLECTION_SWITCHING with
metadata["applied"] = "unknown" (retry: an upsert or delete repeated is harmless).

A record whose operation stops renewing it (its replica crashed, or was cut off from the shared state) stops counting
`EXPIRY_S` (60 s) after its last renewal, by the wall clock (replicas' clocks must agree within half of that); the
operation renews it every `RENEW_S` and, if it could not for half of `EXPIRY_S`, knows writes may have gone by
unjournaled and sets `journal` again and fills once more before fencing. At start a server marks `done` the records of
operations that are finished, gone or its own (which resume from their own record), and removes their journals.

With records that are not shared (one replica, records in the data directory) the lease is 0: every write reads the
record as it is, and the gate's lock (gates.py) covers the writes in flight.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from embedsvc.errors import EmbedsvcError, Reason
from embedsvc.index.state import Records

log = logging.getLogger(__name__)

KIND = "reembeds"
JOURNAL = "reembed-journal"
# Seconds a replica trusts the records it read (and caches them): the same as the alias cache's lifetime.
LEASE_S = 1.0
# The operation waits this many leases after writing a state before relying on it.
SETTLE = 2
# A record not renewed for this long is not in force (its operation died); renewed this often.
EXPIRY_S = 60.0
RENEW_S = 5.0
# Times a slow write reads the record again before it gives up on knowing (and is refused, retryable).
_CONFIRM_TRIES = 3
# A journal entry's JSON stays below the shared state's record size (Milvus VARCHAR, 65,535 bytes).
_ENTRY_BYTES = 60_000
_PAUSE = threading.Event()  # never set: waits on it are pauses


class State(StrEnum):
    JOURNAL = "journal"
    FENCED = "fenced"
    SWITCHED = "switched"
    DONE = "done"


@dataclass(frozen=True)
class Record:
    """A re-embed's record for its source collection."""

    source: str
    target: str
    operation: str  # the operation's id
    replica: str  # the replica running it
    state: State
    # Changes with every state written (not with renewals): a slow write compares it.
    token: str
    expires_at: float  # wall-clock seconds (time.time()) until which it is in force
    aliases: tuple[str, ...] = ()  # switched: the aliases the re-embed switched

    def to_json(self) -> bytes:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return json.dumps(data).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        data = json.loads(raw)
        data["state"] = State(data["state"])
        data["aliases"] = tuple(data.get("aliases", ()))
        return cls(**data)

    @property
    def identity(self) -> tuple[str, str, str]:
        return self.operation, self.state.value, self.token


@dataclass(frozen=True)
class View:
    """A source's record as a replica read it (None: none was ever written), and when (monotonic, before the read)."""

    record: Record | None
    read_at: float
    now: float  # wall-clock time of the read (to tell an expired record)

    @property
    def active(self) -> Record | None:
        """The record when it asks something of writes: not done, not expired."""
        record = self.record
        if record is None or record.state is State.DONE or record.expires_at < self.now:
            return None
        return record

    @property
    def identity(self) -> tuple[str, str, str] | None:
        return self.record.identity if self.record is not None else None


@dataclass
class Admission:
    """A write let through (`Fences.admit`), to be confirmed once it committed (`Fences.confirm`)."""

    source: str
    ids: list[str]
    view: View
    # The operation whose journal holds these ids (written before the commit), if any.
    journaled: str | None = None
    # The replica runs the re-embed of this source: its gate covers the write.
    watched: bool = False


def source_key(source: str) -> str:
    """A collection name as a record key (names may hold what keys may not, such as '..')."""
    return source.encode("utf-8").hex()


def switching(record: Record, state: str, message: str, **metadata: str) -> EmbedsvcError:
    return EmbedsvcError(
        Reason.COLLECTION_SWITCHING,
        message,
        metadata={
            "collection": record.source,
            "target": record.target,
            "operation": f"operations/{record.operation}",
            "state": state,
            **metadata,
        },
    )


class _Memory:
    """Records in memory (a `Collections` made without shared state: one process, nothing to resume)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, dict[str, bytes]] = {}

    @property
    def shared(self) -> bool:
        return False

    def get(self, kind: str, key: str) -> bytes | None:
        with self._lock:
            return self._kinds.get(kind, {}).get(key)

    def put(self, kind: str, key: str, value: bytes) -> None:
        with self._lock:
            self._kinds.setdefault(kind, {})[key] = value

    def delete(self, kind: str, key: str) -> bool:
        with self._lock:
            return self._kinds.get(kind, {}).pop(key, None) is not None

    def delete_many(self, kind: str, keys: Collection[str]) -> None:
        for key in keys:
            self.delete(kind, key)

    def list(self, kind: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self._kinds.get(kind, {}))


def _parse(raw: bytes | None, key: str) -> Record | None:
    if raw is None:
        return None
    try:
        return Record.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        log.error("re-embed record %s is unreadable and was skipped: %s", key, exc)
        return None


class Fences:
    """Every replica's side of the fence: the records' cache that writes consult, the journal they append to; and the
    operation's side (`hold`)."""

    def __init__(
        self,
        records: Records | None = None,
        *,
        lease_s: float | None = None,
        expiry_s: float = EXPIRY_S,
        renew_s: float = RENEW_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        alias_ttl_s: float = 0.0,
        refresh_aliases: Callable[[], None] | None = None,
    ) -> None:
        self.records: Records = records if records is not None else _Memory()
        self.shared = self.records.shared
        # Unshared records are read as they are: no lease to wait out.
        self.lease_s = (LEASE_S if lease_s is None else lease_s) if self.shared else 0.0
        self.expiry_s = expiry_s
        self.renew_s = renew_s
        self.clock = clock
        self.wall = wall
        self.alias_ttl_s = alias_ttl_s
        self._refresh_aliases = refresh_aliases
        self._lock = threading.Lock()
        self._table: dict[str, Record] = {}
        self._read_at = -math.inf

    # ---- what writes see -----------------------------------------------------------------------------------------

    def view(self, source: str, *, fresh: bool = False) -> View:
        """The source's record as this replica sees it: read now (unshared records, or `fresh`), else from a cache
        at most a lease old."""
        key = source_key(source)
        if not self.shared:
            read_at = self.clock()
            return View(_parse(self.records.get(KIND, key), key), read_at, self.wall())
        with self._lock:
            if fresh or self.clock() - self._read_at >= self.lease_s:
                read_at = self.clock()  # before the read: the lease runs from what it may have missed
                table = {}
                for k, raw in self.records.list(KIND).items():
                    record = _parse(raw, k)
                    if record is not None:
                        table[k] = record
                self._table, self._read_at = table, read_at
            return View(self._table.get(key), self._read_at, self.wall())

    def admit(self, source: str, addressed: str, ids: list[str], *, watched: bool) -> Admission:
        """Let a write to `source` (addressed by the caller as `addressed`) through, or refuse it
        (COLLECTION_SWITCHING); journal its ids first when a re-embed another replica runs needs them. `watched`: this
        replica runs the source's re-embed (its gate records the write)."""
        view = self.view(source)
        record = view.active
        admission = Admission(source, ids, view, watched=watched)
        if record is None:
            return admission
        if record.state is State.FENCED:
            raise switching(
                record,
                "fenced",
                f"collection '{source}' is being switched to its re-embedded collection '{record.target}': writes to "
                "it are held back for a moment; nothing was written. Retry after the delay and the write lands in the "
                "new collection",
            )
        if record.state is State.SWITCHED:
            if addressed != source and addressed in record.aliases:
                if self._refresh_aliases is not None:
                    self._refresh_aliases()  # the retry resolves the alias afresh
                raise switching(
                    record,
                    "switched",
                    f"alias '{addressed}' now names the re-embedded collection '{record.target}', not '{source}'; "
                    "nothing was written: retry and the write goes to the new collection",
                    alias=addressed,
                )
            return admission  # the old collection by its own name: the caller's choice
        if not watched:
            self._journal(record.operation, ids)
            admission.journaled = record.operation
        return admission

    def confirm(self, admission: Admission) -> None:
        """After the write committed: make sure the re-embed (if any) cannot have missed it, else refuse it
        (COLLECTION_SWITCHING, applied unknown)."""
        if admission.watched or not self.shared:
            return  # the gate's lock covers it
        view = latest = admission.view
        for _ in range(_CONFIRM_TRIES):
            if self.clock() - view.read_at < self.lease_s:
                return  # committed within its lease: the operation relies on nothing newer yet
            latest = self.view(admission.source, fresh=True)
            record = latest.active
            if latest.identity == view.identity:
                if record is None or record.state is State.SWITCHED:
                    return  # no re-embed began meanwhile (or it is done with the source)
                if record.state is State.JOURNAL and admission.journaled == record.operation:
                    return  # journaled, and not fenced yet: the operation takes the ids after this commit
            if record is None or record.state is not State.JOURNAL:
                break
            # A re-embed began (or began again) meanwhile: journal the ids for it, then check that it came in time.
            self._journal(record.operation, admission.ids)
            admission.journaled = record.operation
            view = latest
        record = latest.record
        raise EmbedsvcError(
            Reason.COLLECTION_SWITCHING,
            f"the write to collection '{admission.source}' committed too late to know whether the re-embed of it, "
            "switching meanwhile, copied it: it may be in the old collection only. Retry: the write then lands where "
            "it belongs",
            metadata={
                "collection": admission.source,
                "applied": "unknown",
                "state": record.state.value if record is not None else "",
                "target": record.target if record is not None else "",
                "operation": f"operations/{record.operation}" if record is not None else "",
            },
        )

    def _journal(self, operation: str, ids: Iterable[str]) -> None:
        """Append ids to an operation's journal (one or more records, each under the size a record may have)."""
        chunk: list[str] = []
        size = 2
        for i in ids:
            cost = len(json.dumps(i)) + 1
            if chunk and size + cost > _ENTRY_BYTES:
                self._append(operation, chunk)
                chunk, size = [], 2
            chunk.append(i)
            size += cost
        if chunk:
            self._append(operation, chunk)

    def _append(self, operation: str, ids: list[str]) -> None:
        key = f"{operation}/{time.time_ns():020d}-{secrets.token_hex(6)}"
        self.records.put(JOURNAL, key, json.dumps(ids, separators=(",", ":")).encode("utf-8"))

    # ---- the operation's side ------------------------------------------------------------------------------------

    def hold(self, source: str, target: str, operation: str, replica: str) -> Fence:
        """The record of a re-embed that starts (or resumes) now; close it when the operation ends."""
        self._forget_journals(source, keep=operation)
        return Fence(self, source, target, operation, replica)

    def put(self, record: Record) -> None:
        key = source_key(record.source)
        self.records.put(KIND, key, record.to_json())
        if self.shared:
            with self._lock:
                self._table[key] = record  # this replica sees its own change at once

    def take(self, operation: str) -> set[str]:
        """The ids an operation's journal holds (and forget them)."""
        prefix = f"{operation}/"
        entries = {k: raw for k, raw in self.records.list(JOURNAL).items() if k.startswith(prefix)}
        ids: set[str] = set()
        for key, raw in entries.items():
            try:
                ids.update(json.loads(raw))
            except ValueError as exc:
                log.error("re-embed journal entry %s is unreadable and was skipped: %s", key, exc)
        if entries:
            self.records.delete_many(JOURNAL, list(entries))
        return ids

    def _forget_journals(self, source: str, keep: str = "") -> None:
        """Remove the journals of this source's earlier operations (a crash's leftovers)."""
        mine = {r.operation for r in self._records_now() if r.source == source and r.operation != keep}
        stale = [k for k in self.records.list(JOURNAL) if k.split("/", 1)[0] in mine]
        if stale:
            self.records.delete_many(JOURNAL, stale)

    def _records_now(self) -> list[Record]:
        return [r for k, raw in self.records.list(KIND).items() if (r := _parse(raw, k)) is not None]

    def recover(self, replica: str, running: Callable[[str], bool]) -> list[Record]:
        """At start: mark `done` the records of operations that are finished or gone (`running(id)` is False) or
        that this replica ran (none runs here yet; they resume from their own records), and remove journals no
        running operation will read. The records so released."""
        released = []
        live = set()
        for record in self._records_now():
            if record.state is State.DONE:
                continue
            if record.replica == replica or not running(record.operation):
                done = replace(record, state=State.DONE, token=secrets.token_hex(6), expires_at=self.wall())
                self.put(done)
                released.append(done)
                log.info(
                    "re-embed of %s (operation %s) no longer runs: its fence is released",
                    record.source,
                    record.operation,
                )
            else:
                live.add(record.operation)
        stale = [k for k in self.records.list(JOURNAL) if k.split("/", 1)[0] not in live]
        if stale:
            self.records.delete_many(JOURNAL, stale)
        return released


class Fence:
    """A running re-embed's record: written at each state (`enter`), renewed in the background, `done` at `close`."""

    def __init__(self, fences: Fences, source: str, target: str, operation: str, replica: str) -> None:
        self._fences = fences
        self._lock = threading.Lock()
        self.record = Record(source, target, operation, replica, State.DONE, "", 0.0)
        self._renewed = fences.clock()
        self._lapsed = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def state(self) -> State:
        return self.record.state

    @property
    def lapsed(self) -> bool:
        """The record could not be renewed in time since the last `enter`: writes may have ignored it meanwhile."""
        with self._lock:
            return self._lapsed or self._fences.clock() - self._renewed > self._fences.expiry_s / 2

    def enter(self, state: State, aliases: Iterable[str] = ()) -> None:
        """Write a new state (in force at once for this replica, for every replica after `settle`)."""
        with self._lock:
            record = replace(
                self.record,
                state=state,
                token=secrets.token_hex(6),
                expires_at=self._fences.wall() + self._fences.expiry_s,
                aliases=tuple(aliases),
            )
            self._fences.put(record)
            self.record = record
            self._renewed = self._fences.clock()
            self._lapsed = False
        if self._renewer is None and state is not State.DONE:
            self._renewer = threading.Thread(target=self._renew, name="reembed-fence", daemon=True)
            self._renewer.start()

    def settle(self, check: Callable[[], None], seconds: float | None = None) -> None:
        """Wait until every replica has seen the last state (`SETTLE` leases, or `seconds`), on the monotonic clock;
        `check` runs between short waits (it raises to stop)."""
        wait = SETTLE * self._fences.lease_s if seconds is None else seconds
        deadline = self._fences.clock() + wait
        while (left := deadline - self._fences.clock()) > 0:
            check()
            _PAUSE.wait(min(left, 0.1))
        check()

    def switched_settle(self) -> float:
        """How long `switched` must stay: every alias cache read before the switch has expired, and every replica
        has read the record since."""
        return self._fences.alias_ttl_s + SETTLE * self._fences.lease_s

    def take(self) -> set[str]:
        return self._fences.take(self.record.operation)

    def _renew(self) -> None:
        while not self._stop.wait(self._fences.renew_s):
            with self._lock:
                if self._stop.is_set() or self.record.state is State.DONE:
                    return
                record = replace(self.record, expires_at=self._fences.wall() + self._fences.expiry_s)
                try:
                    self._fences.put(record)
                except EmbedsvcError as exc:
                    log.warning("re-embed of %s: cannot renew its fence: %s", record.source, exc.message)
                    continue
                if self._fences.clock() - self._renewed > self._fences.expiry_s / 2:
                    self._lapsed = True  # renewed too late: the record may have expired meanwhile
                self.record = record
                self._renewed = self._fences.clock()

    def close(self) -> None:
        """The operation ended (done, cancelled, failed or paused): writes go on as usual; its journal is removed."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(30)
        try:
            if self.record.state is not State.DONE and self.record.token:
                self.enter(State.DONE)
            self._fences.take(self.record.operation)
        except EmbedsvcError as exc:  # the shared state is down: the record expires, the next start cleans up
            log.error("re-embed of %s: cannot release its fence: %s", self.record.source, exc.message)
