"""Re-embedding a collection after a model change: a long-running operation that fills a new collection, bound to the
model's version served now (or to another model), from the inputs the old one stored, copies the writes made
meanwhile, and switches aliases to it.

The fill never replays writes: it makes the new collection *agree* with the old one, item by item. An item agrees
when the new collection holds the old one's id with the same input and metadata (its vector then is the new model's
embedding of that input); an item the old collection lacks must be absent from the new one. So:
1. checking-inputs: every item of the source is read once; items with no stored input (written as vectors or
   images), and for a word model words outside its vocabulary, are counted. Unless `drop_unembeddable`, any such
   item ends the operation here (INPUTS_NOT_STORED), before anything is embedded.
2. filling: the source's re-embed fence (fence.py) is set to `journal` and, once every replica has seen it, the
   source's items are read in id order, a batch at a time; each item that does not agree is embedded with the new
   model and written (or removed from the target). From before the first step on, the id of every write that commits
   to the source is recorded: by the source's gate (gates.py) for the writes through this replica, in the fence's
   shared journal (before they commit) for the writes through any other.
3. catching-up: the recorded ids are taken and made to agree with the source's *current* state, round after round,
   until few remain. Because the current state is copied rather than the writes replayed, an older state is never
   written over a newer one: a write during the fill that the fill's batch read before it is copied again afterwards,
   and an item deleted meanwhile is deleted from the target, never brought back.
4. switching: the fence is set to `fenced` (every replica refuses writes to the source with COLLECTION_SWITCHING,
   retryable) and, once every replica has seen it, with the source's gate held (no write half-way on this replica),
   the last recorded ids are made to agree, the items that cannot be re-embedded are counted again, the aliases are
   switched, each in one step, and the fence is set to `switched` for as long as an alias cache may still name the
   old collection (a write through such a cache is refused the same way; its retry lands in the new collection). A
   write that resolved an alias before the switch and commits after it on this replica is refused with
   COLLECTION_NOT_READY (retry: it then lands in the new collection). The fence is `done` when the operation ends,
   however it ends.

Resumable: the operation's parameters are in its record; after a restart the same steps run again, and an existing
target (made by this operation: its intent is recorded before it is created) is made to agree, with a pruning pass
removing what the source no longer holds; only items that disagree are embedded again (after the switch, recorded in
the operation's details, nothing runs again). A fence left by a crash stops counting when its record expires, or at
once when the server starts again (fence.py). Cancelled (or failed), the fence is released, the target is removed and
the source is as writes left it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.collections.binding import Binding, binding, collection_shape, shape_fields, shaped
from embedsvc.core.collections.fence import Fence, State
from embedsvc.core.collections.gates import Watch
from embedsvc.core.collections.shapes import dtype_of
from embedsvc.core.operations import PREFIX, Operation, Progress, Work
from embedsvc.errors import EmbedsvcError, Reason, invalid
from embedsvc.index.backend import VectorCollection, check_name
from embedsvc.index.types import CollectionConfig, IndexKind, StoredItem, Upsert

log = logging.getLogger(__name__)

REEMBED = "reembed"
SAMPLE = 20
# Items per step (read, compare, embed, write): between steps the operation may be cancelled.
BATCH = 256
# Catch up outside the gate until this few writes wait, at most this many rounds.
_CATCH_UP_SMALL = 256
_CATCH_UP_ROUNDS = 50
# Times the fill begins again when the fence could not be renewed in time (the shared state was unreachable).
_LAPSES = 2
# Reasons that say an input cannot be embedded by the model (the item is left out), not that embedding failed.
_INPUT_REASONS = {
    Reason.OUT_OF_VOCABULARY,
    Reason.UNEMBEDDABLE_INPUT,
    Reason.INVALID_VALUE,
    Reason.LIMIT_EXCEEDED,
    Reason.MISSING_FIELD,
    Reason.NOT_FINITE,
}
# Reasons to wait and try again (user traffic fills a text model's queue): at most this long per step.
_BUSY_REASONS = {Reason.OVERLOADED, Reason.MODEL_NOT_READY}
_BUSY_S = 120.0


@dataclass(frozen=True)
class Plan:
    """What a re-embed was asked, resolved (its record's params)."""

    source: str
    target: str
    model: str
    version: str
    # The alias the caller named (switched at the end), or None: every alias of the source then.
    aliases: list[str] | None
    drop: bool


class Unembeddable:
    """The ids of the source that cannot be re-embedded, as far as seen."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def sample(self) -> list[str]:
        return sorted(self.ids)[:SAMPLE]

    def error(self, source: str) -> EmbedsvcError:
        sample = self.sample()
        return EmbedsvcError(
            Reason.INPUTS_NOT_STORED,
            f"{len(self.ids)} items of '{source}' cannot be re-embedded: no input was stored for them (written as "
            f"vectors or images) or the model does not take it (for example {', '.join(map(repr, sample[:5]))}); "
            "nothing was switched. Set drop_unembeddable to leave them out, or write them again with inputs",
            field="collection",
            metadata={"count": str(len(self.ids)), "sample": _json_list(sample)},
        )


def _json_list(values: Sequence[str]) -> str:
    import json

    return json.dumps(list(values), ensure_ascii=False)


def default_target(source: str, version: str) -> str:
    digits = "".join(re.findall(r"[0-9A-Za-z]", version.split(":", 1)[-1]))[:8] or "reembed"
    return f"{source[: 64 - len(digits) - 1]}-{digits}"


class Reembedder:
    """Starts re-embeds and runs them (and, after a restart, resumes them) as operations."""

    def __init__(self, admin: CollectionAdmin) -> None:
        self.admin = admin
        self.collections = admin.collections
        self.store = admin.store
        self.operations = admin.operations
        self.gates = admin.collections.gates
        self.fences = admin.collections.fences

    # ---- starting ------------------------------------------------------------------------------------------------

    def start(self, name: str, model: str = "", target: str = "", drop: bool = False) -> Operation:
        real = self.collections.resolve(name, "collection")
        source = self.store.get(real)
        source.check_ready()
        for op in self.operations.list(real):
            if op.kind == REEMBED and not op.done:
                return op
        bound = self._binding(model or source.config.model, source.config)
        target = target or default_target(real, bound.version)
        check_name(target, "target_name")
        if target == real:
            raise invalid("target_name", "the new collection needs a name of its own")
        if self.store.has(target) or self.admin.aliases.get(target) is not None:
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"the name '{target}' is taken (by a collection or an alias); choose another target_name",
                field="target_name",
                metadata={"collection": target},
            )
        self._config(target, source.config, bound)  # its index parameters must suit the new dimension
        plan = Plan(real, target, bound.name, bound.version, [name] if name != real else None, drop)
        return self.operations.start(REEMBED, real, self._work(plan), params=asdict(plan))

    def recover(self) -> None:
        """At start, before resuming: release the fences of re-embeds that no longer run (fence.py)."""

        def running(op_id: str) -> bool:
            try:
                return not self.operations.get(PREFIX + op_id).done
            except EmbedsvcError:
                return False

        self.fences.recover(self.operations.replica, running)

    def resume(self, op: Operation) -> Work:
        """The work of a re-embed that a restart stopped (OperationStore.resume)."""
        return self._work(Plan(**op.params))

    def _binding(self, model: str, source: CollectionConfig) -> Binding:
        if not model:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"collection '{source.name}' is not bound to a model: name the model to re-embed its inputs with",
                field="model",
            )
        bound = binding(self.collections.registry, model, self.collections.latents)
        if bound.images is not None:
            raise EmbedsvcError(
                Reason.MODEL_BINDING,
                f"model '{model}' embeds images, and collections do not store images: only word and text inputs "
                "can be re-embedded",
                field="model",
            )
        # A shaped collection's copy keeps its shape (checked against the new model, calibrated for it).
        shape = collection_shape(
            bound, source.shape_dimensions, dtype_of(source), self.collections.calibrations, field="model"
        )
        return shaped(bound, shape)

    def _config(self, target: str, source: CollectionConfig, bound: Binding) -> CollectionConfig:
        index = source.index
        if index.kind is IndexKind.IVF_PQ and bound.dimension % max(index.pq_m, 1):
            index = replace(index, pq_m=0)  # the default for the new dimension
        # Resolved as CreateCollection resolves for the backend: Milvus takes no oversample or recall target.
        index = index.resolved(bound.dimension, rescoring=self.store.rescoring(source.backend))
        for field, message in index.problems(bound.dimension):
            raise invalid(field, f"the source's index does not suit dimension {bound.dimension}: {message}")
        return CollectionConfig(
            target,
            bound.dimension,
            source.metric,
            index,
            bound.name,
            bound.version,
            bound.space,
            created_at=datetime.now(UTC).timestamp(),
            backend=source.backend,
            indexed_fields=source.indexed_fields,  # the metadata is copied as it is, so its indexed fields carry over
            keyword=source.keyword,  # the keyword index (over the same inputs) and search defaults carry over
            search_defaults=source.search_defaults,
            **shape_fields(bound),
        )

    # ---- running -------------------------------------------------------------------------------------------------

    def _work(self, plan: Plan) -> Work:
        def work(progress: Progress) -> dict[str, Any]:
            try:
                return self._run(plan, progress)
            except EmbedsvcError as exc:
                if exc.reason is Reason.CANCELLED and self.operations.closing:
                    raise  # the server stops: the target stays, and the operation resumes at the next start
                self._remove_target(plan, progress)
                raise

        return work

    def _run(self, plan: Plan, progress: Progress) -> dict[str, Any]:
        details = progress.operation.details
        if "switched_aliases" in details:  # a restart came after the switch: nothing is left to do
            progress.stage("done")
            return {
                **self._result(plan, self.store.get(plan.target), list(details["switched_aliases"]), Unembeddable()),
                "dropped": int(details.get("unembeddable", 0)),
                "dropped_sample": list(details.get("unembeddable_sample", [])),
            }
        source = self.store.get(plan.source)
        source.check_ready()
        model = self._binding(plan.model, source.config)
        if model.version != plan.version:
            raise EmbedsvcError(
                Reason.MODEL_VERSION_CHANGED,
                f"model '{plan.model}' changed from {plan.version} to {model.version} during the re-embed; run it "
                "again",
                field="model",
                metadata={"expected": plan.version, "actual": model.version},
            )
        aliases = plan.aliases if plan.aliases is not None else self.admin.aliases.of(plan.source)
        progress.details(
            persist=True,
            source=plan.source,
            target=plan.target,
            model=plan.model,
            model_version=plan.version,
            aliases=aliases,
        )
        unembeddable = Unembeddable()
        self._check_inputs(source, model, plan, progress, unembeddable)
        target, fresh = self._target(plan, source.config, model, progress)
        op = progress.operation
        fence = self.fences.hold(plan.source, plan.target, op.id, op.replica or self.operations.replica)
        try:
            with self.gates.watching(plan.source, f"operations/{op.id}") as watch:
                switched = self._fill_and_switch(
                    plan, source, target, model, progress, unembeddable, watch, fence, prune=not fresh
                )
            # Writes through a stale alias cache are refused (retry: to the new collection) until every cache has
            # expired; the switch is done, so this wait is not cancelled.
            fence.settle(lambda: None, fence.switched_settle())
        finally:
            fence.close()
        progress.stage("done")
        log.info("re-embedded %s into %s (%s); switched %s", plan.source, plan.target, plan.version, switched)
        return self._result(plan, target, switched, unembeddable)

    @staticmethod
    def _result(
        plan: Plan, target: VectorCollection, switched: list[str], unembeddable: Unembeddable
    ) -> dict[str, Any]:
        return {
            "collection": plan.target,
            "source": plan.source,
            "switched_aliases": switched,
            "reembedded": int(target.count),
            "dropped": len(unembeddable.ids),
            "dropped_sample": unembeddable.sample(),
        }

    def _fill_and_switch(
        self,
        plan: Plan,
        source: VectorCollection,
        target: VectorCollection,
        model: Binding,
        progress: Progress,
        unembeddable: Unembeddable,
        watch: Watch,
        fence: Fence,
        *,
        prune: bool,
    ) -> list[str]:
        """Fill the target, catch up, fence the source's writes, copy the last ones and switch; the aliases
        switched. Begun again (with a full pass) if the fence could not be renewed in time."""
        caught_up = 0
        for _ in range(_LAPSES + 1):
            # From here on every replica journals its writes to the source (this one: its watch), so the fill sees
            # every write before it and the journal every write after it.
            fence.enter(State.JOURNAL)
            fence.settle(progress.check)
            self._fill(source, target, model, progress, unembeddable, prune=prune)
            prune = True  # a second attempt: the source may have lost items that the target holds
            progress.stage("catching-up", watch.pending())
            for _ in range(_CATCH_UP_ROUNDS):
                ids = watch.take() | fence.take()
                if not ids:
                    break
                caught_up += self._sync(source, target, model, sorted(ids), progress, unembeddable)
                progress.details(caught_up=caught_up)
                if len(ids) <= _CATCH_UP_SMALL and watch.pending() <= _CATCH_UP_SMALL:
                    break
            if fence.lapsed:
                continue
            # Every replica refuses writes to the source (retryable) once this is seen; the ones before are journaled.
            fence.enter(State.FENCED)
            fence.settle(progress.check)
            progress.stage("switching")
            with self.gates.held(plan.source):
                caught_up += self._sync(
                    source, target, model, sorted(watch.take() | fence.take()), progress, unembeddable
                )
                if fence.lapsed:
                    continue
                self._report(progress, unembeddable, caught_up=caught_up)
                if unembeddable.ids and not plan.drop:
                    raise unembeddable.error(plan.source)
                switched = self.admin.switch_aliases(plan.aliases, plan.source, plan.target)
                progress.details(persist=True, switched_aliases=switched)
                fence.enter(State.SWITCHED, switched)
                return switched
        raise EmbedsvcError(
            Reason.STORAGE_ERROR,
            f"the re-embed of '{plan.source}' could not keep its record in the shared state current; nothing was "
            "switched: run it again",
        )

    @staticmethod
    def _report(progress: Progress, unembeddable: Unembeddable, **values: Any) -> None:
        progress.details(
            persist=True, unembeddable=len(unembeddable.ids), unembeddable_sample=unembeddable.sample(), **values
        )

    def _check_inputs(
        self, source: VectorCollection, model: Binding, plan: Plan, progress: Progress, unembeddable: Unembeddable
    ) -> None:
        """Count the items that cannot be re-embedded (before anything is embedded); INPUTS_NOT_STORED unless
        drop."""
        progress.stage("checking-inputs", source.count)
        done = 0
        for batch in source.export(1000):
            progress.check()
            with_input = [item for item in batch if item.input]
            unembeddable.ids.update(item.id for item in batch if not item.input)
            if model.words is not None and with_input:  # a vocabulary look-up is cheap; texts are checked as filled
                _, failed = self._embed(model, with_input, progress)
                unembeddable.ids.update(failed)
            done += len(batch)
            progress.units(done)
        self._report(progress, unembeddable)
        if unembeddable.ids and not plan.drop:
            raise unembeddable.error(plan.source)

    def _target(
        self, plan: Plan, source: CollectionConfig, model: Binding, progress: Progress
    ) -> tuple[VectorCollection, bool]:
        """The collection the re-embed fills, and whether it was made just now (else a restart's leftover)."""
        config = self._config(plan.target, source, model)
        if self.store.has(plan.target):
            existing = self.store.get(plan.target)
            mine = progress.operation.details.get("target_created", False)
            same = (existing.config.model, existing.config.model_version, existing.config.dimension) == (
                config.model,
                config.model_version,
                config.dimension,
            )
            if mine and same:
                existing.check_ready()
                return existing, False
            raise EmbedsvcError(
                Reason.COLLECTION_EXISTS,
                f"the name '{plan.target}' was taken by another collection meanwhile",
                field="target_name",
                metadata={"collection": plan.target},
            )
        progress.details(persist=True, target_created=True)  # the intent first: a restart then knows it is ours
        return self.admin.create_config(config), True

    def _fill(
        self,
        source: VectorCollection,
        target: VectorCollection,
        model: Binding,
        progress: Progress,
        unembeddable: Unembeddable,
        *,
        prune: bool,
    ) -> None:
        progress.stage("filling", source.count)
        done = 0
        for batch in source.export(BATCH):
            progress.check()
            self._agree(batch, [], target, model, progress, unembeddable)
            done += len(batch)
            progress.units(done)
            if done % (BATCH * 16) == 0:
                self._report(progress, unembeddable)
        self._report(progress, unembeddable)
        if not prune:
            return
        progress.stage("pruning", target.count)
        done = 0
        for batch in target.export(1000):
            progress.check()
            ids = [item.id for item in batch]
            gone = [i for i, found in zip(ids, source.get(ids, with_vectors=False), strict=True) if found is None]
            if gone:
                target.delete(gone)
                unembeddable.ids.difference_update(gone)
            done += len(batch)
            progress.units(done)

    def _sync(
        self,
        source: VectorCollection,
        target: VectorCollection,
        model: Binding,
        ids: list[str],
        progress: Progress,
        unembeddable: Unembeddable,
    ) -> int:
        """Make these ids agree with the source's current state; how many."""
        for start in range(0, len(ids), BATCH):
            progress.check()
            chunk = ids[start : start + BATCH]
            found = source.get(chunk, with_vectors=False)
            present = [item for item in found if item is not None]
            absent = [i for i, item in zip(chunk, found, strict=True) if item is None]
            self._agree(present, absent, target, model, progress, unembeddable)
        return len(ids)

    def _agree(
        self,
        items: list[StoredItem],
        absent: list[str],
        target: VectorCollection,
        model: Binding,
        progress: Progress,
        unembeddable: Unembeddable,
    ) -> None:
        """Make the target agree with these source items (and lack the `absent` ids)."""
        ids = [item.id for item in items]
        held = target.get(ids + absent, with_vectors=False)
        mine = dict(zip(ids + absent, held, strict=True))
        remove = [i for i in absent if mine[i] is not None]
        unembeddable.ids.difference_update(absent)
        changed = []
        for item in items:
            if not item.input:
                unembeddable.ids.add(item.id)
                if mine[item.id] is not None:
                    remove.append(item.id)
                continue
            now = mine[item.id]
            if now is not None and now.input == item.input and now.metadata == item.metadata:
                unembeddable.ids.discard(item.id)
                continue
            changed.append(item)
        if changed:
            vectors, failed = self._embed(model, changed, progress)
            keep = [n for n, item in enumerate(changed) if item.id not in failed]
            unembeddable.ids.update(failed)
            unembeddable.ids.difference_update(changed[n].id for n in keep)
            remove += [i for i in failed if mine[i] is not None]
            if keep:
                target.upsert(
                    Upsert(
                        [changed[n].id for n in keep],
                        vectors[keep],
                        [changed[n].metadata for n in keep],
                        [changed[n].input for n in keep],
                    )
                )
        if remove:
            target.delete(remove)

    def _embed(self, model: Binding, items: list[StoredItem], progress: Progress) -> tuple[np.ndarray, set[str]]:
        """The items' inputs embedded (rows of the items that failed are zeros), and the ids the model refused."""
        inputs = [item.input for item in items]
        try:
            return self._embed_all(model, inputs, progress), set()
        except EmbedsvcError as exc:
            if exc.reason not in _INPUT_REASONS:
                raise
        vectors = np.zeros((len(items), model.dimension), np.float32)
        failed = set()
        for n, item in enumerate(items):  # one at a time, to find which inputs the model refuses
            try:
                vectors[n] = self._embed_all(model, [item.input], progress)[0]
            except EmbedsvcError as exc:
                if exc.reason not in _INPUT_REASONS:
                    raise
                failed.add(item.id)
        return vectors, failed

    def _embed_all(self, model: Binding, inputs: list[str], progress: Progress) -> np.ndarray:
        limits = self.collections.limits
        waited = 0.0
        while True:
            try:
                return model.embed(inputs, lambda n, _t: f"items[{n}].input", limits, progress.control)
            except EmbedsvcError as exc:
                if exc.reason not in _BUSY_REASONS or waited >= _BUSY_S:
                    raise
            pause = min(2.0, 0.1 * 2 ** min(int(waited), 5))
            progress.check()
            time.sleep(pause)  # the model's queue is full of user traffic: user calls go first
            waited += pause

    def _remove_target(self, plan: Plan, progress: Progress) -> None:
        """After a cancel or a failure: remove the target if this operation made it (and nothing points at it)."""
        try:
            if not progress.operation.details.get("target_created") or not self.store.has(plan.target):
                return
            if self.admin.aliases.of(plan.target):
                log.warning("re-embed of %s: keeping %s, which aliases point at", plan.source, plan.target)
                return
            self.store.delete(plan.target)
            log.info("re-embed of %s stopped: removed the partial collection %s", plan.source, plan.target)
        except EmbedsvcError as exc:
            log.error("re-embed of %s: cannot remove the partial collection %s: %s", plan.source, plan.target, exc)
