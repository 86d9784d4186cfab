"""Executor services, one per file, each a :class:`~orc_executor.executor.registry.Service`."""
