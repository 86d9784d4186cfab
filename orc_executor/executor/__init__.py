"""The executor: sessions, the wrapper-function registry, services and bootstrap profiles."""
