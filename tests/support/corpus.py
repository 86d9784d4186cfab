"""The corpus of real third-party programs (built by ``scripts/corpus.sh`` into ``.corpus/``)
and the cases run on them: by ``tests/e2e/test_corpus.py`` (every executor gives the same
outcome as ``llvm-jitlink-executor``) and by ``scripts/bench.py --corpus`` (end-to-end time).

A :class:`Case` is one ``llvm-jitlink PROGRAM.o -args ARGV...`` run in a fresh working
directory holding its input files, with its stdin; its :class:`Outcome` is the exit status,
stdout, stderr and every file in the working directory afterwards (path, mode, content).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / ".corpus"
"""Where ``scripts/bootstrap.sh`` has ``scripts/corpus.sh`` build the corpus."""

LLVM_JITLINK = Path("/usr/lib/llvm-22/bin/llvm-jitlink")
PROGRAMS = ("lua", "sqlite3", "zstd", "bc", "dc")
"""Every object ``scripts/corpus.sh`` builds (``DIR/NAME.o``)."""


def text(lines: int, seed: int = 1) -> bytes:
    """``lines`` lines of pseudo-random words (a fixed linear congruential generator: the
    same bytes on every machine and Python)."""
    words = ("orc", "jit", "link", "executor", "controller", "memory", "segment", "symbol",
             "wrapper", "function", "slab", "page", "dylib", "runtime", "graph", "section",
             "the", "a", "of", "and", "to", "in", "is", "it", "λ", "ünïcode")
    x = seed
    out = []
    for i in range(lines):
        row = []
        for _ in range(4 + i % 9):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            row.append(words[(x >> 33) % len(words)])
        out.append(" ".join(row))
    return ("\n".join(out) + "\n").encode()


@dataclass(frozen=True)
class Case:
    """One run of a corpus program: ``llvm-jitlink PROGRAM.o -args *argv`` (``argv[0]`` is
    the program's name), in a working directory holding ``files`` (relative path → content),
    with ``stdin``. ``setup`` runs first, in the same directory, each an argv of the same
    program run in llvm-jitlink's own process (to make inputs, not compared)."""

    name: str
    program: str
    argv: tuple[str, ...]
    stdin: bytes = b""
    files: Mapping[str, bytes] = field(default_factory=dict)
    setup: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a run leaves: exit status, output, and the working directory's files
    (relative path → (permission bits, content))."""

    returncode: int
    stdout: bytes
    stderr: bytes
    files: dict[str, tuple[int, bytes]]


LUA_COMPUTE = rb"""
-- numbers: a sieve, recursion, floating point, integers, coroutines, closures
local N = 300000
local sieve, count, sum = {}, 0, 0
for i = 2, N do sieve[i] = true end
for i = 2, math.floor(math.sqrt(N)) do
  if sieve[i] then for j = i * i, N, i do sieve[j] = false end end
end
for i = 2, N do if sieve[i] then count = count + 1; sum = sum + i end end
print("primes below " .. N, count, sum)
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
print("fib(25)", fib(25))
local rows = {}
for y = -12, 12 do
  local row = {}
  for x = -39, 20 do
    local cr, ci, zr, zi, k = x / 20, y / 10, 0.0, 0.0, 0
    while k < 100 and zr * zr + zi * zi < 4 do
      zr, zi, k = zr * zr - zi * zi + cr, 2 * zr * zi + ci, k + 1
    end
    row[#row + 1] = k == 100 and "#" or (k > 8 and "+" or ".")
  end
  rows[#rows + 1] = table.concat(row)
end
print(table.concat(rows, "\n"))
print(string.format("%.12f %.6e %d %s", math.pi, 1 / 3, math.maxinteger // 7, 2 ^ 0.5))
print(math.type(1), math.type(1.0), 7 // 2, 7 % -3, -7 // 2, 1e308 * 10, 3 & 5, 1 << 62)
local gen = coroutine.wrap(function() for i = 1, 10 do coroutine.yield(i * i) end end)
local squares = {}
for _ = 1, 10 do squares[#squares + 1] = gen() end
print(table.concat(squares, ","))
local t = {}
for i = 1, 50000 do t[i] = (i * 7919) % 50021 end
table.sort(t, function(a, b) return a > b end)
print(t[1], t[2], t[#t], #t)
"""

LUA_STRINGS = rb"""
-- text: word frequencies of words.txt, patterns, gsub, formatting, utf8
local freq, total, longest = {}, 0, ""
for line in io.lines("words.txt") do
  for word in line:gmatch("%S+") do
    freq[word] = (freq[word] or 0) + 1
    total = total + 1
    if #word > #longest then longest = word end
  end
end
local words = {}
for w in pairs(freq) do words[#words + 1] = w end
table.sort(words, function(a, b) return freq[a] > freq[b] or (freq[a] == freq[b] and a < b) end)
print("words", total, "distinct", #words, "longest", longest, utf8.len(longest))
for i = 1, 8 do print(string.format("%-12s %6d", words[i], freq[words[i]])) end
local s = "The quick brown fox jumps over the lazy dog"
print(s:upper(), s:lower():gsub("o", "0"))
print(s:gsub("(%w+)", "<%1>"))
print(string.format("%q", "tab\there \"quoted\" \0 nul"))
print(("x"):rep(5, "-"), s:find("fox"), s:match("(%a+) dog"), s:byte(1, 3))
print(utf8.char(955, 252, 8364), #utf8.char(955, 252, 8364))
local csv = {}
for i = 1, 2000 do csv[#csv + 1] = string.format("%d,%s,%.2f", i, words[i % #words + 1], i / 7) end
local joined = table.concat(csv, "\n")
local n, bytes = 0, 0
for a, b, c in joined:gmatch("(%d+),([^,]+),([%d.]+)") do n = n + 1; bytes = bytes + #b end
print("csv rows", n, bytes, #joined)
"""

LUA_FILES = rb"""
-- files by relative path: write, append, read back, rename, remove; input from stdin
local lines = {}
for line in io.lines() do lines[#lines + 1] = line end
table.sort(lines)
local out = assert(io.open("sorted.txt", "w"))
for _, l in ipairs(lines) do out:write(l, "\n") end
out:close()
local log = assert(io.open("log.txt", "a"))
log:write("sorted ", #lines, " lines\n")
log:close()
local f = assert(io.open("scratch.tmp", "wb"))
f:write(string.rep("\0\1\2\255", 1024))
f:close()
assert(os.rename("scratch.tmp", "binary.dat"))
local g = assert(io.open("gone.txt", "w")); g:write("x"); g:close()
assert(os.remove("gone.txt"))
print(io.open("gone.txt") == nil, select(2, io.open("gone.txt")))
local back = assert(io.open("sorted.txt", "r")):read("a")
print("read back", #back, back:sub(1, 30):gsub("\n", "|"))
print("binary", #assert(io.open("binary.dat", "rb")):read("a"))
io.stderr:write("done with ", #lines, " lines\n")
"""

LUA_ERROR = rb"""
local function level3(x) return x.field.missing end
local function level2(x) return level3(x) end
print("before the error")
io.stdout:flush()
level2({ field = false })
"""

SQL_DB = rb"""
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INT, price REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000)
INSERT INTO items SELECT x, 'item' || x, x % 97, (x * 37 % 1000) / 10.0 FROM c;
CREATE INDEX items_qty ON items(qty);
CREATE TABLE tags(item INT REFERENCES items(id), tag TEXT);
INSERT INTO tags SELECT id, CASE id % 3 WHEN 0 THEN 'red' WHEN 1 THEN 'green' ELSE 'blue' END
  FROM items WHERE id % 5 = 0;
SELECT count(*), sum(qty), round(avg(price), 3), min(name), max(name) FROM items;
SELECT qty, count(*) AS n FROM items GROUP BY qty ORDER BY n DESC, qty LIMIT 5;
SELECT t.tag, count(*), round(sum(i.price), 2) FROM tags t JOIN items i ON i.id = t.item
  GROUP BY t.tag ORDER BY t.tag;
SELECT id, price, rank() OVER (PARTITION BY qty ORDER BY price DESC, id) AS r
  FROM items WHERE qty = 3 ORDER BY r, id LIMIT 4;
UPDATE items SET price = price * 2 WHERE qty = 0;
DELETE FROM items WHERE id % 1000 = 1;
.headers on
.mode csv
.output top.csv
SELECT * FROM items ORDER BY price DESC, id LIMIT 200;
.output stdout
.mode column
SELECT name, printf('%.2f', price) AS p FROM items ORDER BY id DESC LIMIT 3;
PRAGMA integrity_check;
VACUUM;
SELECT count(*) FROM items;
"""

SQL_ERROR = b"SELECT 1;\nSELECT * FROM no_such_table;\nSELECT 2;\n"

BC_SCRIPT = b"""scale = 400
4 * a(1)
e(1)
define f(n) { if (n < 2) return 1; return n * f(n - 1); }
f(150)
scale = 50
sqrt(2)
l(10) / l(2)
obase = 16
2 ^ 200
"""

DATA = text(40000)
"""About 1.8 MB of text, the zstd cases' input."""

CASES: tuple[Case, ...] = (
    Case("lua-compute", "lua", ("lua", "compute.lua"), files={"compute.lua": LUA_COMPUTE}),
    Case("lua-strings", "lua", ("lua", "strings.lua"),
         files={"strings.lua": LUA_STRINGS, "words.txt": text(6000, seed=7)}),
    Case("lua-files", "lua", ("lua", "files.lua"), stdin=text(3000, seed=3),
         files={"files.lua": LUA_FILES}),
    Case("lua-error", "lua", ("lua", "error.lua"), files={"error.lua": LUA_ERROR}),
    # os.exit calls exit() in the executor: llvm-jitlink reports the disconnection.
    Case("lua-exit", "lua", ("lua", "-e", "io.write('bye\\n') os.exit(3)")),
    Case("sqlite3-db", "sqlite3", ("sqlite3", "test.db"), stdin=SQL_DB),
    Case("sqlite3-json", "sqlite3",
         ("sqlite3", "-json", ":memory:",
          "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) "
          "SELECT x, x * x AS sq, json_object('hex', printf('%x', x), 'odd', x % 2) AS j "
          "FROM c WHERE x % 7 = 0")),
    Case("sqlite3-error", "sqlite3", ("sqlite3", "-bail", ":memory:"), stdin=SQL_ERROR),
    Case("zstd-compress", "zstd", ("zstd", "-q", "-9", "-T2", "--rm", "data.txt"),
         files={"data.txt": DATA}),
    Case("zstd-decompress", "zstd", ("zstd", "-q", "-d", "data.txt.zst", "-o", "restored.txt"),
         files={"data.txt": DATA}, setup=(("zstd", "-q", "-3", "--rm", "data.txt"),)),
    Case("zstd-pipe", "zstd", ("zstd", "-c", "-5"), stdin=DATA),
    Case("bc", "bc", ("bc", "-lq", "script.bc"), stdin=b"quit\n",
         files={"script.bc": BC_SCRIPT}),
    Case("dc", "dc", ("dc",), stdin=b"2 1000 ^ p 50 k 2 v p 3 7 / p 12345 678 % p\n"),
)


def missing(corpus: Path = CORPUS) -> list[str]:
    """The corpus objects not built in ``corpus`` (empty when it is complete)."""
    return [f"{p}.o" for p in PROGRAMS if not (corpus / f"{p}.o").is_file()]


def prepare(case: Case, cwd: Path, corpus: Path = CORPUS) -> None:
    """Put ``case``'s input files in ``cwd`` (an empty directory) and run its setup."""
    for rel, content in case.files.items():
        path = cwd / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    for argv in case.setup:
        subprocess.run([str(LLVM_JITLINK), str(corpus / f"{case.program}.o"), "-args", *argv],
                       cwd=cwd, check=True, capture_output=True, timeout=120)


def command(case: Case, executor: str | None, corpus: Path = CORPUS) -> list[str]:
    """The llvm-jitlink command line of ``case`` with ``executor`` (``None``: in
    llvm-jitlink's own process)."""
    oop = [f"-oop-executor={executor}"] if executor is not None else []
    return [str(LLVM_JITLINK), *oop, str(corpus / f"{case.program}.o"), "-args", *case.argv]


def snapshot(cwd: Path) -> dict[str, tuple[int, bytes]]:
    """Every regular file under ``cwd``: relative path → (permission bits, content)."""
    out = {}
    for root, _dirs, names in os.walk(cwd):
        for name in names:
            path = Path(root, name)
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b"<not a file>"
            out[str(path.relative_to(cwd))] = (stat.S_IMODE(st.st_mode), content)
    return out


def run(case: Case, executor: str | None, cwd: Path, env: Mapping[str, str],
        corpus: Path = CORPUS, timeout: float = 120) -> Outcome:
    """Prepare ``cwd`` and run ``case`` there with ``executor``: its :class:`Outcome`."""
    prepare(case, cwd, corpus)
    r = subprocess.run(command(case, executor, corpus), input=case.stdin, capture_output=True,
                       cwd=cwd, env=dict(env), timeout=timeout, check=False)
    return Outcome(r.returncode, r.stdout, r.stderr, snapshot(cwd))
