"""cffi API-mode builder for ``orc_executor.native._native`` (compiled at install time).

The native module holds everything that must be real machine code in the executor process:
libc memory calls, safe memory access (``process_vm_readv``/``writev`` on ourselves), the C
wrapper-function ABI (``CWrapperFunctionResult fn(const char *, size_t)``), the JIT dispatch
function called by JIT'd code (an ``extern "Python"`` callback behind a C trampoline), the
EH-frame registrar, the GDB JIT interface (``__jit_debug_descriptor``) and, in ``fault.c``,
fault recovery around calls into JIT'd code.
"""

from __future__ import annotations

import os

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(_HERE, name), encoding="utf-8") as f:
        return f.read()


#: The C declarations Python sees (native.cdef).
CDEF = _read("native.cdef")
#: The extension's C: native.c (memory, calls, dispatch, registrars, launch state),
#: then fault.c (fault recovery), compiled as one translation unit.
SOURCE = "\n".join(f'#line 1 "{name}"\n' + _read(name) for name in ("native.c", "fault.c"))

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "orc_executor.native._native",
    SOURCE,
    libraries=["dl", "pthread", "rt"],
    extra_compile_args=["-O2", "-fno-strict-aliasing"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
