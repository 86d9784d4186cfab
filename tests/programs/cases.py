"""Manifest of the C test programs in this directory.

Each :class:`Case` is one ``llvm-jitlink -oop-executor=EXECUTOR <objects> [-args ARGS...]`` run.
``tests/support/jitrun.py`` compiles the sources and runs the case; ``tests/e2e/test_programs.py``
runs every case with the stock ``llvm-jitlink-executor`` and with orc-executor and requires the
same (stdout, stderr, exit status) from both, plus the ``expect_*`` facts written here, so that a
case cannot pass when both executors are broken the same way.

Placeholders, substituted by the harness:

* ``{tmp}`` in ``args`` and ``env`` values: a fresh temporary directory for the run. Output is
  normalized back to the literal ``{tmp}``, so it can be used in ``expect_*`` too.
* ``{orc_rt}`` in ``jitlink_flags``: the LLVM ORC runtime archive (``liborc_rt-x86_64.a``,
  see ``scripts/fetch-orc-runtime.sh``); only cases with ``needs_orc_runtime`` use it.

The exact behaviour of the stock executor behind these expectations (abort, exit handlers,
constructors, buffering, ...) is written down in ``tests/e2e/REFERENCE_NOTES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS_DIR = Path(__file__).resolve().parent

#: gcc flags for every case unless it says otherwise (``gcc -c`` is added by the harness).
DEFAULT_CFLAGS: tuple[str, ...] = ("-std=c11", "-fPIC", "-O1")

#: stderr line printed by llvm-jitlink when the executor goes away during a call (abort, a
#: crash, exit() from JIT'd code); its ``argv[0]`` (the llvm-jitlink path) is normalized to
#: ``{jitlink}`` by the harness.
DISCONNECTING = "{jitlink}: disconnecting\n"


@dataclass(frozen=True)
class Case:
    """One llvm-jitlink run of a C program."""

    name: str
    #: C files relative to this directory, compiled separately (one object each, in order).
    sources: list[str]
    #: Program arguments (``-args ...``; not passed at all when empty). May contain ``{tmp}``.
    args: list[str] = field(default_factory=list)
    #: Bytes fed to stdin; ``None`` means stdin is ``/dev/null``.
    stdin: bytes | None = None
    cflags: list[str] = field(default_factory=lambda: list(DEFAULT_CFLAGS))
    #: Extra llvm-jitlink options placed before the objects. May contain ``{orc_rt}``.
    jitlink_flags: list[str] = field(default_factory=list)
    #: Extra environment variables for llvm-jitlink (and so the executor). May contain ``{tmp}``.
    env: dict[str, str] = field(default_factory=dict)
    #: Run with stderr redirected into the stdout pipe (to compare their interleaving).
    merge_stderr: bool = False
    #: The run ends with a link error: llvm-jitlink then tears the executor down and prints a
    #: racy mix of teardown messages (see REFERENCE_NOTES.md); the harness drops those lines.
    racy_teardown: bool = False
    needs_orc_runtime: bool = False
    #: Seconds for one llvm-jitlink run (compilation is not included).
    timeout: float = 30.0
    description: str = ""

    # Known-good facts (after normalization). ``None`` = not checked.
    expect_returncode: int | None = None
    expect_stdout: str | None = None
    expect_stderr: str | None = None
    expect_stdout_contains: list[str] = field(default_factory=list)
    expect_stderr_contains: list[str] = field(default_factory=list)

    @property
    def uses_tmp(self) -> bool:
        """True when the case needs a temporary directory (``{tmp}`` in args or env)."""
        return any("{tmp}" in a for a in self.args) or any("{tmp}" in v for v in self.env.values())

    @property
    def source_paths(self) -> list[Path]:
        return [PROGRAMS_DIR / s for s in self.sources]


# --------------------------------------------------------------------------------------------
# Inputs generated here (and their expected digests computed in Python, independently of C).

MANY_ARGS: list[str] = [f"arg{i:03d}-{'x' * (i % 7)}" for i in range(300)]


def _fnv1a_args(args: list[str]) -> int:
    h = 1469598103934665603
    for a in args:
        for b in a.encode() + b"\0":
            h ^= b
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _big_stdin() -> bytes:
    lines = [f"line {i:06d}: {'word ' * (i % 13)}end\n" for i in range(20000)]
    return "".join(lines).encode()


BIG_STDIN: bytes = _big_stdin()


def _stdin_summary(data: bytes) -> str:
    h = 5381
    words = 0
    in_word = False
    for c in data:
        h = (h * 33 + c) & 0xFFFFFFFFFFFFFFFF
        if chr(c) in " \t\n\v\f\r":
            in_word = False
        elif not in_word:
            in_word = True
            words += 1
    lines = data.count(b"\n")
    return f"lines={lines} words={words} bytes={len(data)} hash={h & 0xFFFFFFFF:08x}\n"


def _bulk_last_hash(n: int) -> int:
    h = 0
    for i in range(n):
        h = (h * 1000003 + i) & 0xFFFFFFFFFFFFFFFF
    return h


BULK_LINES = 60000  # 60000 * 82 bytes = ~4.7 MiB of stdout

# --------------------------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        name="args_exit",
        sources=["args_exit.c"],
        args=["3", "14", "25", "hello world", ""],
        description="argc/argv exactly as given (no argv[0] synthesized), exit code from args",
        expect_returncode=42,
        expect_stdout=(
            "argc=5\n"
            'argv[0]="3" len=1\n'
            'argv[1]="14" len=2\n'
            'argv[2]="25" len=2\n'
            'argv[3]="hello world" len=11\n'
            'argv[4]="" len=0\n'
            "argv[argc]=NULL\n"
            f"sum=42 hash={_fnv1a_args(['3', '14', '25', 'hello world', '']):016x}\n"
        ),
        expect_stderr="",
    ),
    Case(
        name="args_none",
        sources=["args_exit.c"],
        description="no -args at all: argc 0",
        expect_returncode=7,
        expect_stdout=f"argc=0\nargv[argc]=NULL\nsum=0 hash={_fnv1a_args([]):016x}\n",
        expect_stderr="",
    ),
    Case(
        name="args_many",
        sources=["args_exit.c"],
        args=MANY_ARGS,
        description="300 arguments",
        expect_returncode=0,
        expect_stdout=f"argc=300\nargv[argc]=NULL\nsum=0 hash={_fnv1a_args(MANY_ARGS):016x}\n",
    ),
    Case(
        name="multi_object",
        sources=["multi_main.c", "multi_lib.c"],
        args=["5"],
        description="two objects referencing each other's functions and data",
        expect_returncode=1,
        expect_stdout=(
            "lib_name=multi_lib lib_counter=17\n"
            "main_ops[0](5)=25\n"
            "main_ops[1](5)=-5\n"
            "main_ops[2](5)=1019\n"
            "lib_call_main_hook(5)=1112 hook_calls=2\n"
            "main_value=1005 lib_counter=20\n"
        ),
    ),
    Case(
        name="multi_object_reversed",
        sources=["multi_lib.c", "multi_main.c"],
        args=["-3"],
        description="same program, objects in the other order, other argument",
        expect_returncode=(20 + 997) & 0x7F,
        expect_stdout_contains=["main_ops[0](-3)=9\n", "main_value=997 lib_counter=20\n"],
    ),
    Case(
        name="bigdata",
        sources=["bigdata.c"],
        args=["12345", "7"],
        description="4 MiB initialized .data table and 16 MiB .bss",
        timeout=60.0,
        expect_stdout_contains=[
            "table: 4194304 bytes, mismatches=0 checksum=ad0000c9aaa00000\n",
            "table[12345]=fafd0bbe15087938\n",
            "bss: 16777216 bytes, nonzero=0, sum after fill 7 = 28672\n",
        ],
    ),
    Case(
        name="bigdata_other_index",
        sources=["bigdata.c"],
        args=["0x7ffff", "255"],
        description="same program, other arguments (results must differ)",
        timeout=60.0,
        expect_stdout_contains=[
            "mismatches=0 checksum=ad0000c9aaa00000\n",
            "bss: 16777216 bytes, nonzero=0, sum after fill 255 = 1044480\n",
        ],
    ),
    Case(
        name="qsort_desc",
        sources=["qsort_cb.c"],
        args=["desc", "7", "5", "-3", "99", "7", "12", "0"],
        description="qsort/bsearch calling comparators in JIT'd code",
        expect_returncode=99,
        expect_stdout=(
            "desc: 99 12 7 5 0 -3\n"
            "bsearch(7): found at 3 (comparator called: yes)\n"
            "strings: -3 0 12 5 7 7 99 desc\n"
        ),
    ),
    Case(
        name="qsort_asc",
        sources=["qsort_cb.c"],
        args=["asc", "4", "10", "4", "-20", "3"],
        expect_returncode=10,
        expect_stdout_contains=["asc: -20 3 4 10\n", "bsearch(4): found at 2"],
    ),
    Case(
        name="recursion_100k",
        sources=["recurse.c"],
        args=["100000", "100001"],
        description="100000 frames of ~48 bytes (~4.6 MiB of stack) plus mutual recursion",
        expect_returncode=23,
        expect_stdout="down(100000)=1ac460f7c53f9017\nis_even(100001)=0\n",
    ),
    Case(
        name="stdin_echo",
        sources=["stdin_echo.c"],
        args=["P:"],
        stdin=b"alpha beta\ngamma\n\n  delta epsilon zeta",
        description="reads stdin to EOF (no newline at the end)",
        expect_returncode=3,
        expect_stdout=(
            "P:1: alpha beta\n"
            "P:2: gamma\n"
            "P:3: \n"
            "P:4:   delta epsilon zeta<no newline at end>\n"
            + _stdin_summary(b"alpha beta\ngamma\n\n  delta epsilon zeta")
        ),
    ),
    Case(
        name="stdin_devnull",
        sources=["stdin_echo.c"],
        args=["Q:"],
        description="stdin is /dev/null",
        expect_returncode=0,
        expect_stdout="lines=0 words=0 bytes=0 hash=00001505\n",
    ),
    Case(
        name="stdin_big",
        sources=["stdin_echo.c"],
        args=["-", "quiet"],
        stdin=BIG_STDIN,
        description=f"{len(BIG_STDIN)} bytes of stdin, none of it consumed by the executor",
        expect_returncode=20000 & 0xFF,
        expect_stdout=_stdin_summary(BIG_STDIN),
    ),
    Case(
        name="write_file",
        sources=["write_file.c"],
        args=["{tmp}/out.txt", "3"],
        description="creates a file named in argv, reads it back",
        expect_returncode=3,
        expect_stdout=(
            "wrote {tmp}/out.txt (84 bytes)\n"
            "read: line 1 of 3: 1 squared is 1\n"
            "read: line 2 of 3: 2 squared is 4\n"
            "read: line 3 of 3: 3 squared is 9\n"
            "read back 3 lines\n"
        ),
    ),
    Case(
        name="errno_missing_file",
        sources=["errno_open.c"],
        args=["{tmp}/no/such/file.txt"],
        description="errno/strerror after failing libc calls",
        expect_returncode=2,
        expect_stdout=(
            "fopen({tmp}/no/such/file.txt): errno=2 (No such file or directory)\n"
            "strtol: value=9223372036854775807 errno=34 (Numerical result out of range)\n"
            "fopen(/, w): failed errno=21 (Is a directory)\n"
        ),
        expect_stderr="stderr: {tmp}/no/such/file.txt: No such file or directory\n",
    ),
    Case(
        name="atexit_missing",
        sources=["atexit_missing.c"],
        args=["a"],
        description="atexit() is in libc_nonshared.a, not libc.so: link error, main never runs",
        racy_teardown=True,
        expect_returncode=1,
        expect_stdout="",
        expect_stderr="llvm-jitlink error: Symbols not found: [ atexit ]\n",
    ),
    Case(
        name="exit_with_on_exit_handlers",
        sources=["exit_handlers.c"],
        args=["5", "hi"],
        description="exit(5) from JIT'd code: handlers run, executor exits 5, controller 1",
        expect_returncode=1,
        expect_stdout=(
            "main: calling exit(5)\n"
            "second handler (runs first): status=5\n"
            "on_exit handler: status=5 arg=hi\n"
        ),
        expect_stderr=DISCONNECTING,
    ),
    Case(
        name="late_exit_handler",
        sources=["late_exit_handler.c"],
        args=["bye now"],
        description="a __cxa_atexit handler (libc puts) runs when the executor process exits",
        expect_returncode=7,
        expect_stdout="main: registered handler for 'bye now'\nlate exit handler: bye now\n",
        expect_stderr="",
    ),
    Case(
        name="abort",
        sources=["abort_prog.c"],
        args=["q"],
        description="abort(): unflushed stdout lost, no stack dump, controller says disconnecting",
        expect_returncode=1,
        expect_stdout="before abort: q (flushed)\n",
        expect_stderr="stderr: about to abort (1 args)\n" + DISCONNECTING,
    ),
    Case(
        name="segfault",
        sources=["segv.c"],
        args=["z"],
        description="SIGSEGV in JIT'd code",
        expect_returncode=1,
        expect_stdout="before segv: z\n",
        expect_stderr="stderr: about to crash\n" + DISCONNECTING,
    ),
    Case(
        name="negative_minus_one",
        sources=["negative_ret.c"],
        description="main returns -1",
        expect_returncode=255,
        expect_stdout="returning -1\n",
    ),
    Case(
        name="negative_from_arg",
        sources=["negative_ret.c"],
        args=["7"],
        expect_returncode=249,
        expect_stdout="returning -7\n",
    ),
    Case(
        name="interleave_merged",
        sources=["interleave.c"],
        args=["3"],
        merge_stderr=True,
        description="stdout+stderr in one pipe: fflush keeps order, stdout is fully buffered",
        expect_returncode=3,
        expect_stdout=(
            "out 1/3\nerr 1/3\nout 2/3\nerr 2/3\nout 3/3\nerr 3/3\nerr last\nout unflushed\n"
        ),
    ),
    Case(
        name="interleave_separate",
        sources=["interleave.c"],
        args=["2"],
        expect_returncode=2,
        expect_stdout="out 1/2\nout 2/2\nout unflushed\n",
        expect_stderr="err 1/2\nerr 2/2\nerr last\n",
    ),
    Case(
        name="constructor_without_runtime",
        sources=["ctor_attr.c"],
        args=["1"],
        description="without -orc-runtime llvm-jitlink runs no constructors/destructors",
        expect_returncode=1,
        expect_stdout="main: argc=1 ctor_value=0\n",
        expect_stderr="",
    ),
    Case(
        name="constructor_with_orc_runtime",
        sources=["ctor_attr.c"],
        args=["2"],
        jitlink_flags=["-orc-runtime={orc_rt}"],
        needs_orc_runtime=True,
        timeout=60.0,
        description="-orc-runtime: the constructor runs; the destructor does not",
        expect_returncode=44,
        expect_stdout="constructor ran\nmain: argc=1 ctor_value=42\n",
        expect_stderr="",
    ),
    Case(
        name="atexit_with_orc_runtime",
        sources=["atexit_missing.c"],
        args=["b"],
        jitlink_flags=["-orc-runtime={orc_rt}"],
        needs_orc_runtime=True,
        timeout=60.0,
        description="-orc-runtime provides atexit(); llvm-jitlink never runs the handler",
        expect_returncode=3,
        expect_stdout="main 1 b\n",
        expect_stderr="",
    ),
    Case(
        name="debug_info",
        sources=["debug_fn.c"],
        args=["5"],
        cflags=[*DEFAULT_CFLAGS, "-g"],
        description="-g object (JITLoaderGDB registration) runs normally",
        expect_returncode=16,
        expect_stdout="jitted_fn(5) = 16\n",
        expect_stderr="",
    ),
    Case(
        name="threads",
        sources=["threads.c"],
        args=["4", "100000"],
        cflags=[*DEFAULT_CFLAGS, "-pthread"],
        description="pthread_create/join from JIT'd code",
        expect_returncode=35,
        expect_stdout_contains=["thread 3: sum=50024716073\n", "threads=4 total=199979431935\n"],
    ),
    Case(
        name="getenv",
        sources=["getenv_var.c"],
        args=["ORC_TEST_GREETING", "ORC_TEST_UNSET_VARIABLE", "ORC_TEST_DIR"],
        env={"ORC_TEST_GREETING": "hi there", "ORC_TEST_DIR": "{tmp}/d"},
        description="environment inherited through llvm-jitlink",
        expect_returncode=2,
        expect_stdout=(
            'ORC_TEST_GREETING="hi there"\n'
            "ORC_TEST_UNSET_VARIABLE=(unset)\n"
            'ORC_TEST_DIR="{tmp}/d"\n'
        ),
    ),
    Case(
        name="libm",
        sources=["math_libm.c"],
        args=["1.5", "-2", "10"],
        description="libm functions resolved in the executor process",
        expect_returncode=111,
        expect_stdout=(
            "f(1.5)=6.23009672\nf(-2)=-5.89417106\nf(10)=1007.39005\nsum=1007.72597 floor=1007\n"
        ),
    ),
    Case(
        name="stdout_bulk",
        sources=["stdout_bulk.c"],
        args=[str(BULK_LINES), "T"],
        description="~4.7 MiB of stdout through the pipe",
        expect_returncode=_bulk_last_hash(BULK_LINES) & 0x7F,
        expect_stdout_contains=[
            f"T {BULK_LINES - 1:08d} {_bulk_last_hash(BULK_LINES):016x} " + "." * 48 + "\n",
        ],
        expect_stderr=f"wrote {BULK_LINES} lines\n",
    ),
]

CASES_BY_NAME: dict[str, Case] = {c.name: c for c in CASES}

assert len(CASES_BY_NAME) == len(CASES), "duplicate case names"
