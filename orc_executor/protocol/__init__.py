"""The SimpleRemoteEPC protocol, pure: no trio, no cffi (docs/protocol.md)."""
