"""Request size limits: the one `Limits` object every layer checks against (core and transport alike).

A leaf module: it imports nothing from embedsvc, so any layer may import it. The values come from the `[limits]` table
of the configuration (`embedsvc.settings`); every limit is documented here and in the README's configuration section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Request size limits. Anything over a limit is refused with INVALID_ARGUMENT / LIMIT_EXCEEDED."""

    # Expressions in one Arithmetic call, and words in one NearestWords call.
    max_expressions: int = 4096
    # Terms in one expression.
    max_terms: int = 64
    # Characters in the text form of one expression.
    max_expression_chars: int = 4096
    # Hits per expression or per word (top_n).
    max_top_n: int = 1000
    # Words in EmbedWords and DoesntMatch, pairs in Similarity.
    max_words_per_request: int = 10_000
    # Characters in one word.
    max_word_chars: int = 512
    # Bytes of vectors one ExportWords call may stream (words x dimension x 4); RemoteKeyedVectors.vectors uses it.
    max_word_export_bytes: int = 2 * 1024 * 1024 * 1024
    # Bytes of an analogy file sent to EvaluateAnalogies.
    max_analogy_bytes: int = 32 * 1024 * 1024
    # Bytes of one gRPC message, in either direction.
    max_message_bytes: int = 64 * 1024 * 1024
    # Collections: items per Upsert call or UpsertStream message, ids per DeleteItems or GetItems call.
    max_upsert_items: int = 10_000
    # Collections: bytes of one item id (UTF-8).
    max_id_bytes: int = 256
    # Collections: bytes of one item's metadata as JSON.
    max_metadata_bytes: int = 64 * 1024
    # Collections: hits per query (k).
    max_k: int = 1000
    # Collections: queries per BatchSearch call.
    max_queries: int = 1024
    # Collections: characters of a metadata filter.
    max_filter_chars: int = 4096
    # Collections: metadata fields indexed for filters (indexed_fields of CreateCollection).
    max_indexed_fields: int = 32
    # Collections: components of a vector.
    max_dimension: int = 4096
    # Texts in one EmbedTexts call (or stream message), and items with text inputs in one Upsert.
    max_texts_per_request: int = 2048
    # Characters in one text (with EmbedTexts' literal prompt before it, when one is given).
    max_text_chars: int = 100_000
    # Texts waiting for one text encoder; more are refused with RESOURCE_EXHAUSTED / OVERLOADED.
    max_queued_texts: int = 16_384
    # Images in one EmbedImages, EncodeImages, Reconstruct or AnomalyScore call, latents or expressions in one
    # DecodeLatents call, and items with image inputs in one Upsert.
    max_images_per_request: int = 1024
    # Pixels (width x height) of one encoded image, read from its header before decoding (decompression bombs).
    max_image_pixels: int = 16_777_216
    # Images of one Sample call.
    max_samples: int = 1024
    # Frames of one Interpolate or Traverse call.
    max_steps: int = 256
    # Optimisation steps of one Inpaint call.
    max_inpaint_steps: int = 2000
    # Examples (both sets) of one CreateDirection call.
    max_direction_examples: int = 10_000
    # Monte Carlo draws per image in AnomalyScore.
    max_elbo_samples: int = 64
    # Maps: points in one Project, Cluster or Plot point set.
    max_map_points: int = 20_000
    # Maps: components of one Cluster (and max_k).
    max_clusters: int = 50
    # Maps: width and height of a plot, in pixels.
    max_plot_pixels_side: int = 4096
    # Maps: points a plot labels (more are drawn unlabelled).
    max_annotated_points: int = 200
    # Entries per page of a List call; larger page_size values are treated as this (AIP-158).
    max_page_size: int = 1000
    # Hits one response may hold (queries x k, expressions x top_n, words x top_n), checked before any work. A
    # search response is also refused when its hits' ids, inputs, metadata and vectors would pass max_message_bytes.
    max_result_hits: int = 100_000
    # Filters: levels of parentheses and NOTs, and values in one IN list.
    max_filter_depth: int = 64
    max_filter_values: int = 1024
    # Maps: points x dimensions x components of every mixture tried (x dimensions again for full covariance).
    max_cluster_work: int = 20_000_000_000
    # Maps: values (points x dimensions) of one point set.
    max_map_values: int = 20_000_000
    # Searches: candidates one query gathers from one side (dense or keyword) before fusion, and the candidates
    # diversity (MMR) and grouping choose from.
    max_candidates: int = 1000
    # Searches: candidates a rerank stage scores per query (each one a cross-encoder pair).
    max_rerank_candidates: int = 500
    # Searches: example ids (positive and negative together) of one query by example.
    max_examples: int = 256
    # Searches: hits per group (group_size).
    max_group_size: int = 100
    # Snapshots: bytes of one UploadSnapshot (its files, in all).
    max_snapshot_upload_bytes: int = 16 * 1024 * 1024 * 1024
    # Texts scored against the query in one Rerank call (each one a cross-encoder pair).
    max_rerank_texts: int = 1000
