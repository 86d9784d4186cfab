"""orc-executor: an out-of-process JIT executor for LLVM ORC's SimpleRemoteEPC protocol."""

__version__ = "0.1.0"
