"""Transports: sans-I/O message framing (:mod:`.framing`), connection specs (:mod:`.spec`)
and the trio streams that carry frames (:mod:`.streams`)."""
