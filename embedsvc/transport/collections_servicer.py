"""CollectionService: durable collections of vectors, searched with FAISS; aliases; rebuilds and re-embeds as
operations."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from embedsvc.core.collections.admin import CollectionAdmin
from embedsvc.core.collections.reembed import Reembedder
from embedsvc.errors import EmbedsvcError, Reason, missing
from embedsvc.transport import auth, convert
from embedsvc.transport import collections_convert as cc
from embedsvc.transport.operations_servicer import Outcomes
from embedsvc.v1 import collections_pb2, collections_pb2_grpc


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, admin: CollectionAdmin, reembedder: Reembedder, outcomes: Outcomes) -> None:
        self._admin = admin
        self._c = admin.collections
        self._reembedder = reembedder
        self._outcomes = outcomes

    def CreateCollection(
        self, request: collections_pb2.CreateCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.CreateCollectionResponse:
        document_prompt, query_prompt = cc.prompt_names(request)
        info = self._admin.create(
            request.name,
            request.dimension,
            cc.metric(request.metric),
            cc.index_params(request.index),
            request.model,
            backend=cc.backend(request.backend),
            indexed_fields=cc.indexed_fields(request.indexed_fields),
            keyword=cc.keyword_spec(request),
            search_defaults=cc.search_defaults(request),
            document_prompt=document_prompt,
            query_prompt=query_prompt,
            dimensions=request.shape.dimensions,
            dtype=convert.dtype(request.shape.dtype, "shape.dtype"),
        )
        return collections_pb2.CreateCollectionResponse(collection=cc.info_message(info))

    def GetCollection(
        self, request: collections_pb2.GetCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.GetCollectionResponse:
        return collections_pb2.GetCollectionResponse(collection=cc.info_message(self._c.info(request.name)))

    def ListCollections(
        self, request: collections_pb2.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.ListCollectionsResponse:
        page = self._admin.list_page(request.page_size, request.page_token, auth.visible)
        return collections_pb2.ListCollectionsResponse(
            collections=[cc.info_message(i) for i in page.entries], next_page_token=page.next_page_token
        )

    def DeleteCollection(
        self, request: collections_pb2.DeleteCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.DeleteCollectionResponse:
        self._admin.delete(request.name)
        return collections_pb2.DeleteCollectionResponse()

    def Upsert(
        self, request: collections_pb2.UpsertRequest, context: grpc.ServicerContext
    ) -> collections_pb2.UpsertResponse:
        items = cc.items(request.items, request.packed_vectors)
        upserted, count = self._c.upsert(request.collection, items, convert.call_control(context))
        return collections_pb2.UpsertResponse(upserted=upserted, count=count)

    def UpsertStream(
        self, request_iterator: Iterator[collections_pb2.UpsertStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[collections_pb2.UpsertStreamResponse]:
        """A pipeline one batch deep: batch n + 1 is read, validated, embedded and staged while batch n is being
        written (on a writer thread of this stream); acknowledgements stay in order, each once its batch is durable,
        and a batch is written only after every batch before it was."""
        name = None
        total = 0
        control = convert.call_control(context)
        pending: tuple[Future[int], int, int] | None = None

        def acknowledge(write: tuple[Future[int], int, int]) -> collections_pb2.UpsertStreamResponse:
            nonlocal total
            future, sequence, upserted = write
            try:
                count = future.result()
            except EmbedsvcError as exc:
                exc.metadata["sequence"] = str(sequence)  # the batches acknowledged before it are durable
                raise
            total += upserted
            return collections_pb2.UpsertStreamResponse(
                sequence=sequence, upserted=upserted, count=count, stream_upserted=total
            )

        with ThreadPoolExecutor(1, thread_name_prefix="upsert-stream") as writer:
            try:
                for position, request in enumerate(request_iterator):
                    sequence = request.sequence or position
                    try:
                        if not request.collection:
                            raise missing("collection", "the collection name")
                        if name is not None and request.collection != name:
                            raise EmbedsvcError(
                                Reason.INVALID_VALUE,
                                f"every message of the stream must name collection '{name}'; this one names "
                                f"'{request.collection}'",
                                field="collection",
                            )
                        name = request.collection
                        items = cc.items(request.items, request.packed_vectors)
                        batch = self._c.stage_upsert(name, items, control)
                    except EmbedsvcError as exc:
                        exc.metadata["sequence"] = str(sequence)
                        if pending is not None:  # the batch before it is acknowledged (or fails) first
                            write, pending = pending, None
                            yield acknowledge(write)
                        raise
                    if pending is not None:
                        write, pending = pending, None
                        yield acknowledge(write)
                    future = writer.submit(contextvars.copy_context().run, self._c.commit, batch)
                    pending = (future, sequence, len(batch.ids))
                if pending is not None:
                    write, pending = pending, None
                    yield acknowledge(write)
            finally:
                if pending is not None:  # the caller went away: the write in flight still completes
                    pending[0].cancel()

    def DeleteItems(
        self, request: collections_pb2.DeleteItemsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.DeleteItemsResponse:
        deleted, absent = self._c.delete_items(request.collection, list(request.ids))
        return collections_pb2.DeleteItemsResponse(deleted=deleted, missing=absent)

    def GetItems(
        self, request: collections_pb2.GetItemsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.GetItemsResponse:
        found, absent = self._c.get_items(request.collection, list(request.ids), with_vectors=request.include_vectors)
        space = self._c.config(request.collection).space
        return collections_pb2.GetItemsResponse(
            items=[cc.item_message(i, space, with_vector=request.include_vectors) for i in found], missing_ids=absent
        )

    def Search(
        self, request: collections_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> collections_pb2.SearchResponse:
        if not request.HasField("query"):
            raise missing("query", "a query")
        query = cc.query(request.query, "query", self._c.limits)
        outcome = self._c.search(
            request.collection,
            [query],
            cc.search_options(request.options),
            batch=False,
            control=convert.call_control(context),
        )
        response = collections_pb2.SearchResponse(
            provenance=convert.provenance_message(outcome.provenance), retrieval=cc.report_message(outcome.report)
        )
        cc.add_result(response, outcome.results[0], outcome.collection.config.space)
        return response

    def BatchSearch(
        self, request: collections_pb2.BatchSearchRequest, context: grpc.ServicerContext
    ) -> collections_pb2.BatchSearchResponse:
        queries = cc.batch_queries(request, self._c.limits)
        packed = request.packed_results
        outcome = self._c.search(
            request.collection,
            queries,
            cc.packed_search_options(request.options) if packed else cc.search_options(request.options),
            batch=True,
            control=convert.call_control(context),
        )
        response = collections_pb2.BatchSearchResponse(
            provenance=convert.provenance_message(outcome.provenance), retrieval=cc.report_message(outcome.report)
        )
        collection = outcome.collection
        space = collection.config.space
        if packed:
            response.packed.CopyFrom(
                cc.packed_hits(
                    [r.hits for r in outcome.results],
                    space,
                    with_vectors=request.options.include_vectors,
                    dimension=collection.config.dimension,
                )
            )
            return response
        for result in outcome.results:
            cc.add_result(response.results.add(), result, space)
        return response

    def Rebuild(
        self, request: collections_pb2.RebuildRequest, context: grpc.ServicerContext
    ) -> collections_pb2.RebuildResponse:
        operation = self._admin.rebuild(request.name)
        return collections_pb2.RebuildResponse(operation=self._outcomes.message(operation))

    def Reembed(
        self, request: collections_pb2.ReembedRequest, context: grpc.ServicerContext
    ) -> collections_pb2.ReembedResponse:
        operation = self._reembedder.start(
            request.collection, request.model, request.target_name, drop=request.drop_unembeddable
        )
        return collections_pb2.ReembedResponse(operation=self._outcomes.message(operation))

    def ExportItems(
        self, request: collections_pb2.ExportItemsRequest, context: grpc.ServicerContext
    ) -> Iterator[collections_pb2.ExportItemsResponse]:
        batches = self._c.export(request.collection, request.batch_size, request.page_token)
        space = self._c.config(request.collection).space
        for batch, token in batches:
            yield collections_pb2.ExportItemsResponse(
                items=[cc.item_message(i, space, with_vector=True) for i in batch], next_page_token=token
            )

    def CreateAlias(
        self, request: collections_pb2.CreateAliasRequest, context: grpc.ServicerContext
    ) -> collections_pb2.CreateAliasResponse:
        alias = self._admin.create_alias(request.alias, request.collection)
        return collections_pb2.CreateAliasResponse(alias=cc.alias_message(alias))

    def UpdateAlias(
        self, request: collections_pb2.UpdateAliasRequest, context: grpc.ServicerContext
    ) -> collections_pb2.UpdateAliasResponse:
        alias, previous = self._admin.update_alias(request.alias, request.collection)
        return collections_pb2.UpdateAliasResponse(alias=cc.alias_message(alias), previous_collection=previous)

    def DeleteAlias(
        self, request: collections_pb2.DeleteAliasRequest, context: grpc.ServicerContext
    ) -> collections_pb2.DeleteAliasResponse:
        self._admin.delete_alias(request.alias)
        return collections_pb2.DeleteAliasResponse()

    def ListAliases(
        self, request: collections_pb2.ListAliasesRequest, context: grpc.ServicerContext
    ) -> collections_pb2.ListAliasesResponse:
        page = self._admin.list_aliases(request.page_size, request.page_token, request.collection, auth.visible)
        return collections_pb2.ListAliasesResponse(
            aliases=[cc.alias_message(a) for a in page.entries], next_page_token=page.next_page_token
        )
