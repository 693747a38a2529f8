import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Limits(_message.Message):
    __slots__ = ("max_expressions", "max_terms", "max_expression_chars", "max_top_n", "max_words_per_request", "max_word_chars", "max_analogy_bytes", "max_message_bytes", "max_upsert_items", "max_id_bytes", "max_metadata_bytes", "max_k", "max_queries", "max_filter_chars", "max_dimension", "max_texts_per_request", "max_text_chars", "max_queued_texts", "max_images_per_request", "max_image_pixels", "max_samples", "max_steps", "max_inpaint_steps", "max_direction_examples", "max_elbo_samples", "max_map_points", "max_clusters", "max_plot_pixels_side", "max_annotated_points", "max_page_size", "max_result_hits", "max_filter_depth", "max_filter_values", "max_cluster_work", "max_map_values", "max_word_export_bytes", "max_candidates", "max_rerank_candidates", "max_examples", "max_group_size", "max_snapshot_upload_bytes", "max_rerank_texts", "max_indexed_fields")
    MAX_EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_TERMS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXPRESSION_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_N_FIELD_NUMBER: _ClassVar[int]
    MAX_WORDS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_WORD_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_ANALOGY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_UPSERT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_ID_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_METADATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPAINT_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_DIRECTION_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_ELBO_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_MAP_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    MAX_PLOT_PIXELS_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_ANNOTATED_POINTS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULT_HITS_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_FILTER_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_CLUSTER_WORK_FIELD_NUMBER: _ClassVar[int]
    MAX_MAP_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_WORD_EXPORT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_RERANK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SNAPSHOT_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RERANK_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INDEXED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    max_expressions: int
    max_terms: int
    max_expression_chars: int
    max_top_n: int
    max_words_per_request: int
    max_word_chars: int
    max_analogy_bytes: int
    max_message_bytes: int
    max_upsert_items: int
    max_id_bytes: int
    max_metadata_bytes: int
    max_k: int
    max_queries: int
    max_filter_chars: int
    max_dimension: int
    max_texts_per_request: int
    max_text_chars: int
    max_queued_texts: int
    max_images_per_request: int
    max_image_pixels: int
    max_samples: int
    max_steps: int
    max_inpaint_steps: int
    max_direction_examples: int
    max_elbo_samples: int
    max_map_points: int
    max_clusters: int
    max_plot_pixels_side: int
    max_annotated_points: int
    max_page_size: int
    max_result_hits: int
    max_filter_depth: int
    max_filter_values: int
    max_cluster_work: int
    max_map_values: int
    max_word_export_bytes: int
    max_candidates: int
    max_rerank_candidates: int
    max_examples: int
    max_group_size: int
    max_snapshot_upload_bytes: int
    max_rerank_texts: int
    max_indexed_fields: int
    def __init__(self, max_expressions: _Optional[int] = ..., max_terms: _Optional[int] = ..., max_expression_chars: _Optional[int] = ..., max_top_n: _Optional[int] = ..., max_words_per_request: _Optional[int] = ..., max_word_chars: _Optional[int] = ..., max_analogy_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_upsert_items: _Optional[int] = ..., max_id_bytes: _Optional[int] = ..., max_metadata_bytes: _Optional[int] = ..., max_k: _Optional[int] = ..., max_queries: _Optional[int] = ..., max_filter_chars: _Optional[int] = ..., max_dimension: _Optional[int] = ..., max_texts_per_request: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_queued_texts: _Optional[int] = ..., max_images_per_request: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_samples: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_inpaint_steps: _Optional[int] = ..., max_direction_examples: _Optional[int] = ..., max_elbo_samples: _Optional[int] = ..., max_map_points: _Optional[int] = ..., max_clusters: _Optional[int] = ..., max_plot_pixels_side: _Optional[int] = ..., max_annotated_points: _Optional[int] = ..., max_page_size: _Optional[int] = ..., max_result_hits: _Optional[int] = ..., max_filter_depth: _Optional[int] = ..., max_filter_values: _Optional[int] = ..., max_cluster_work: _Optional[int] = ..., max_map_values: _Optional[int] = ..., max_word_export_bytes: _Optional[int] = ..., max_candidates: _Optional[int] = ..., max_rerank_candidates: _Optional[int] = ..., max_examples: _Optional[int] = ..., max_group_size: _Optional[int] = ..., max_snapshot_upload_bytes: _Optional[int] = ..., max_rerank_texts: _Optional[int] = ..., max_indexed_fields: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("server_version", "api_version", "start_time", "limits")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    start_time: _timestamp_pb2.Timestamp
    limits: Limits
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...
