"""CollectionService: durable collections of vectors, searched with FAISS."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from embedsvc.core.collections.service import Collections
from embedsvc.errors import EmbedsvcError, Reason, missing
from embedsvc.transport import collections_convert as cc
from embedsvc.transport import convert
from embedsvc.v1 import collections_pb2, collections_pb2_grpc


class CollectionServicer(collections_pb2_grpc.CollectionServiceServicer):
    def __init__(self, collections: Collections) -> None:
        self._c = collections

    def CreateCollection(
        self, request: collections_pb2.CreateCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.CreateCollectionResponse:
        info = self._c.create(
            request.name, request.dimension, cc.metric(request.metric), cc.index_params(request.index), request.model
        )
        return collections_pb2.CreateCollectionResponse(collection=cc.info_message(info))

    def GetCollection(
        self, request: collections_pb2.GetCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.GetCollectionResponse:
        return collections_pb2.GetCollectionResponse(collection=cc.info_message(self._c.info(request.name)))

    def ListCollections(
        self, request: collections_pb2.ListCollectionsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.ListCollectionsResponse:
        return collections_pb2.ListCollectionsResponse(collections=[cc.info_message(i) for i in self._c.list_all()])

    def DeleteCollection(
        self, request: collections_pb2.DeleteCollectionRequest, context: grpc.ServicerContext
    ) -> collections_pb2.DeleteCollectionResponse:
        self._c.delete(request.name)
        return collections_pb2.DeleteCollectionResponse()

    def Upsert(
        self, request: collections_pb2.UpsertRequest, context: grpc.ServicerContext
    ) -> collections_pb2.UpsertResponse:
        items = cc.items(request.items, request.packed_vectors)
        upserted, count = self._c.upsert(request.collection, items, convert.call_control(context))
        return collections_pb2.UpsertResponse(upserted=upserted, count=count)

    def UpsertStream(
        self, request_iterator: Iterator[collections_pb2.UpsertStreamRequest], context: grpc.ServicerContext
    ) -> collections_pb2.UpsertStreamResponse:
        name = None
        upserted = batches = count = 0
        control = convert.call_control(context)
        for request in request_iterator:
            if not request.collection:
                raise missing("collection", "the collection name")
            if name is not None and request.collection != name:
                raise EmbedsvcError(
                    Reason.INVALID_VALUE,
                    f"every message of the stream must name collection '{name}'; message {batches} names "
                    f"'{request.collection}' (the {batches} messages before it are written)",
                    field="collection",
                )
            name = request.collection
            n, count = self._c.upsert(name, cc.items(request.items, request.packed_vectors), control)
            upserted += n
            batches += 1
        return collections_pb2.UpsertStreamResponse(upserted=upserted, batches=batches, count=count)

    def DeleteItems(
        self, request: collections_pb2.DeleteItemsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.DeleteItemsResponse:
        deleted, absent = self._c.delete_items(request.collection, list(request.ids))
        return collections_pb2.DeleteItemsResponse(deleted=deleted, missing=absent)

    def GetItems(
        self, request: collections_pb2.GetItemsRequest, context: grpc.ServicerContext
    ) -> collections_pb2.GetItemsResponse:
        found, absent = self._c.get_items(request.collection, list(request.ids), with_vectors=request.include_vectors)
        space = self._c.info(request.collection).config.space
        return collections_pb2.GetItemsResponse(
            items=[cc.item_message(i, space, with_vector=request.include_vectors) for i in found], missing_ids=absent
        )

    def Search(
        self, request: collections_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> collections_pb2.SearchResponse:
        if not request.HasField("query"):
            raise missing("query", "a query")
        query = cc.query(request.query, "query", self._c.limits)
        hits, provenance, collection = self._c.search(
            request.collection,
            [query],
            cc.search_options(request.options),
            batch=False,
            control=convert.call_control(context),
        )
        response = collections_pb2.SearchResponse(provenance=convert.provenance_message(provenance))
        cc.add_hits(response.hits, hits[0], collection.config.space)
        return response

    def BatchSearch(
        self, request: collections_pb2.BatchSearchRequest, context: grpc.ServicerContext
    ) -> collections_pb2.BatchSearchResponse:
        queries = cc.batch_queries(request, self._c.limits)
        lists, provenance, collection = self._c.search(
            request.collection,
            queries,
            cc.search_options(request.options),
            batch=True,
            control=convert.call_control(context),
        )
        response = collections_pb2.BatchSearchResponse(provenance=convert.provenance_message(provenance))
        space = collection.config.space
        for hits in lists:
            cc.add_hits(response.results.add().hits, hits, space)
        return response

    def Rebuild(
        self, request: collections_pb2.RebuildRequest, context: grpc.ServicerContext
    ) -> collections_pb2.RebuildResponse:
        return collections_pb2.RebuildResponse(collection=cc.info_message(self._c.rebuild(request.name)))

    def ExportItems(
        self, request: collections_pb2.ExportItemsRequest, context: grpc.ServicerContext
    ) -> Iterator[collections_pb2.ExportItemsResponse]:
        batches = self._c.export(request.collection, request.batch_size)
        space = self._c.info(request.collection).config.space
        for batch in batches:
            yield collections_pb2.ExportItemsResponse(
                items=[cc.item_message(i, space, with_vector=True) for i in batch]
            )
