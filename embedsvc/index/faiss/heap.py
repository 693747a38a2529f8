"""Giving freed heap memory back to the operating system after a collection's large, transient work.

glibc's malloc keeps memory that large transient buffers used (a restart's reads of the checkpoint, the checksum
pass over it, a rebuild's copy of the store, training samples) inside its heap after they are freed, for reuse, so
the server's resident memory stays above what it holds: at 1M int8 vectors, 32 MB over the index's 130 MB after an
open and the checksum pass (0.07 x the raw vectors, the difference between meeting a 0.35 x memory target and not).
`malloc_trim(0)` returns the free pages at the top of every arena and the free whole pages inside them. Elsewhere
(another libc, another OS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _libc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """The C library's function `name` (an int result), or None where the library or the function is not there
    (malloc_trim and mallopt are glibc's)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


_TRIM = _libc("malloc_trim", ctypes.c_size_t)
_MALLOPT = _libc("mallopt", ctypes.c_int, ctypes.c_int)
# glibc's mallopt parameter: allocations of at least this many bytes get pages of their own (mmap), returned to the OS
# when freed. Fixing it also turns off glibc's moving threshold, which after the first large free serves allocations
# of up to 32 MB from the heap, where they stay after they are freed (a batch search's 10 MB of rescoring candidates).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20


def map_large_allocations() -> bool:
    """Give allocations of MMAP_THRESHOLD_BYTES or more their own pages, so that freeing them returns the memory
    (process-wide; called when a collection store opens). True if the C library took it (glibc)."""
    return _MALLOPT is not None and _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS; True if the C library could (glibc), False where it cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
