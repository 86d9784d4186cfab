"""Native memory: the cffi extension (``_native``), safe access helpers and the slab map."""
