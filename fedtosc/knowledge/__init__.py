"""Teacher knowledge, computed once on the server and reused by every client (docs/architecture.md).

`codecs` compresses the teacher's outputs (top-k soft labels, int8 or PCA embeddings) and
decodes them back; `store` keeps them in one self-describing safetensors file keyed by dataset
index, validated on load, from which the server ships each client its slice.
"""

from fedtosc.knowledge.codecs import (
    Knowledge,
    KnowledgeCodec,
    build_codec,
    fidelity,
)
from fedtosc.knowledge.store import (
    KnowledgeStore,
    KnowledgeStoreError,
    StoreHeader,
    export_slice,
    import_slice,
    write_store,
)

__all__ = [
    "Knowledge",
    "KnowledgeCodec",
    "KnowledgeStore",
    "KnowledgeStoreError",
    "StoreHeader",
    "build_codec",
    "export_slice",
    "fidelity",
    "import_slice",
    "write_store",
]
