"""clang-repl 22 as a client: scripted sessions run by orc-executor and by the stock
``llvm-jitlink-executor``, compared byte for byte (stdout, stderr, exit status), over pipes
and with ``--use-shared-memory``.

Every session flushes stdout in its last statement (see ``replrun``'s note on buffered
output at exit); :func:`test_output_left_buffered_at_exit` checks the order of output that is
still in C stdio's buffer when the session ends.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.replrun import (
    CLANG_REPL,
    LINK_FAILURE_HANG_TIMEOUT,
    ReplResult,
    compare_repl,
    run_repl,
    show,
)

MODES = [pytest.param(False, id="pipes"), pytest.param(True, id="shared-memory")]


@pytest.fixture(scope="session")
def clang_repl() -> Path:
    """clang-repl 22 (Debian's clang-tools-22, installed by scripts/bootstrap.sh)."""
    if not CLANG_REPL.is_file():
        pytest.fail(f"{CLANG_REPL} not installed (run scripts/bootstrap.sh)")
    return CLANG_REPL


@pytest.fixture(scope="module")
def libfoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library for ``%lib``."""
    d = tmp_path_factory.mktemp("libfoo")
    (d / "foo.c").write_text(
        '#include <stdio.h>\n'
        'int foo_add(int a, int b) { return a + b; }\n'
        'void foo_hello(void) { printf("hello from libfoo\\n"); }\n'
    )
    lib = d / "libfoo.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(d / "foo.c")], check=True)
    return lib


C_SESSION = r"""
#include <stdio.h>
#include <stdlib.h>
struct point { int x, y; };
struct point p = { .y = 2, .x = 1 };
int square(int n) { return n * n; }
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int xs[] = { 5, 3, 9, 1 };
qsort(xs, 4, sizeof xs[0], cmp);
printf("%d %d %d | %d %d %d %d\n", p.x, p.y, square(7), xs[0], xs[1], xs[2], xs[3]);
void heap(void) { char *h = malloc(32); snprintf(h, 32, "heap %s", "ok"); puts(h); free(h); }
heap();
fflush(stdout);
"""

STL_TEMPLATES = r"""
#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>
std::vector<int> v{5, 3, 9, 1};
std::sort(v.begin(), v.end());
template <typename T> T twice(T x) { return x + x; }
template <typename C> auto total(const C &c) { return std::accumulate(c.begin(), c.end(), 0); }
std::map<std::string, int> m{{"b", 2}, {"a", 1}};
for (auto &[k, n] : m) std::cout << k << '=' << n << ' ';
std::cout << twice(21) << ' ' << twice(std::string("ab")) << ' ' \
          << total(v) << ' ' << v.front() << std::endl;
"""

EXCEPTIONS = r"""
#include <iostream>
#include <stdexcept>
int checked(int n) { if (n < 0) throw std::invalid_argument("negative"); return n; }
int f(int n) { \
  try { return checked(n); } \
  catch (const std::exception &e) { std::cout << "caught " << e.what() << std::endl; } \
  return -1; }
int a = f(3);
int b = f(-3);
std::cout << a << ' ' << b << std::endl;
"""

STATIC_INIT_AT_EXIT = r"""
#include <cstdio>
struct Noisy { \
  const char *name; \
  Noisy(const char *n) : name(n) { std::printf("ctor %s\n", n); } \
  ~Noisy() { std::printf("dtor %s\n", name); std::fflush(stdout); } };
Noisy first("first");
Noisy second("second");
int count() { static Noisy lazy("lazy"); return 1; }
int c = count();
std::fflush(stdout);
"""

THREADS = r"""
#include <atomic>
#include <iostream>
#include <thread>
#include <vector>
thread_local int tl = 5;
std::atomic<int> sum{0};
void add(int i) { tl = i; sum += tl; }
int spawn() { \
  std::vector<std::thread> ts; \
  for (int i = 0; i < 4; i++) ts.emplace_back(add, i); \
  for (auto &t : ts) t.join(); \
  return 0; }
int spawned = spawn();
void nine() { tl = 9; std::cout << "thread tl=" << tl << std::endl; }
std::thread t(nine); t.join();
std::cout << "main tl=" << tl << " sum=" << sum << std::endl;
"""

UNDO = r"""
#include <cstdio>
int undone = 1;
%undo
int undone = 2;
int g() { return 10; }
%undo
int g() { return 20; }
std::printf("%d %d\n", undone, g()); std::fflush(stdout);
"""

LINK_FAILURE = r"""
#include <cstdio>
extern "C" int no_such_function(int);
int before = 1;
int z = no_such_function(3);
int after() { return before + 41; }
std::printf("after %d\n", after()); std::fflush(stdout);
"""

SESSIONS = {
    "stl_templates": (STL_TEMPLATES, "a=1 b=2 42 abab 18 1\n"),
    "exceptions": (EXCEPTIONS, "caught negative\n3 -1\n"),
    "static_init_at_exit": (STATIC_INIT_AT_EXIT,
                            "ctor first\nctor second\nctor lazy\ndtor lazy\ndtor second\n"
                            "dtor first\n"),
    "thread_local_threads": (THREADS, "thread tl=9\nmain tl=5 sum=6\n"),
    "undo": (UNDO, "2 20\n"),
    "link_failure": (LINK_FAILURE, "after 42\n"),
}


def _check_same(ref: ReplResult, ours: ReplResult) -> None:
    assert ours == ref, f"reference:\n{show(ref)}\norc-executor:\n{show(ours)}"


@pytest.mark.parametrize("shared_memory", MODES)
@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_cxx_session(
    clang_repl: Path, executor_path: Path, name: str, shared_memory: bool
) -> None:
    script, expected = SESSIONS[name]
    link = name == "link_failure"
    ref, ours = compare_repl(executor_path, script, shared_memory=shared_memory,
                             timeout=LINK_FAILURE_HANG_TIMEOUT if link else 120,
                             hang_retries=2 if link else 0)
    _check_same(ref, ours)
    assert ours.returncode == 0
    assert expected.encode() in ours.stdout, show(ours)


@pytest.mark.parametrize("shared_memory", MODES)
def test_c_session(clang_repl: Path, executor_path: Path, shared_memory: bool) -> None:
    ref, ours = compare_repl(executor_path, C_SESSION, shared_memory=shared_memory, c=True)
    _check_same(ref, ours)
    assert ours.returncode == 0
    assert b"1 2 49 | 1 3 5 9\nheap ok\n" in ours.stdout, show(ours)


def test_link_failure_is_reported(clang_repl: Path, executor_path: Path) -> None:
    """The statement that fails to link is reported and the session goes on."""
    ours = run_repl(executor_path, LINK_FAILURE, timeout=LINK_FAILURE_HANG_TIMEOUT,
                    hang_retries=2)
    assert b"Symbols not found: [ no_such_function ]" in ours.stderr, show(ours)
    assert b"after 42\n" in ours.stdout


@pytest.mark.parametrize("shared_memory", MODES)
def test_lib_directive(
    clang_repl: Path, executor_path: Path, libfoo: Path, shared_memory: bool
) -> None:
    script = (
        f"%lib {libfoo}\n"
        'extern "C" int foo_add(int, int);\n'
        'extern "C" void foo_hello(void);\n'
        "#include <cstdio>\n"
        "foo_hello();\n"
        'std::printf("%d\\n", foo_add(2, 3)); std::fflush(stdout);\n'
    )
    ref, ours = compare_repl(executor_path, script, shared_memory=shared_memory,
                             replacements={str(libfoo): "{libfoo}"})
    _check_same(ref, ours)
    assert ours.stdout.startswith(b"hello from libfoo\n5\n"), show(ours)


def test_lib_directive_missing_library(clang_repl: Path, executor_path: Path,
                                       tmp_path: Path) -> None:
    missing = tmp_path / "libnothere.so"
    script = f"%lib {missing}\nint x = 1;\n"
    ref, ours = compare_repl(executor_path, script, replacements={str(tmp_path): "{tmp}"})
    _check_same(ref, ours)
    assert b"libnothere.so" in ours.stderr, show(ours)


def test_output_left_buffered_at_exit(clang_repl: Path, executor_path: Path) -> None:
    """Output left in stdio's buffer at the end of the session (no ``%quit``) comes out
    where the stock executor's does."""
    script = '#include <cstdio>\nint x = 42;\nstd::printf("x=%d\\n", x);\n'
    ref, ours = compare_repl(executor_path, script)
    # The stock executor races its exit (which flushes) against clang-repl's last newline
    # and prints either order; orc-executor flushes as soon as the controller hangs up, so
    # the program's output always comes first, as in the reference's usual order.
    assert ref.stdout in (b"x=42\n\n", b"\nx=42\n"), show(ref)
    assert ours.stdout == b"x=42\n\n", show(ours)
    assert (ours.stderr, ours.returncode) == (ref.stderr, ref.returncode), show(ours)
