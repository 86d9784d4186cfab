"""A short run of ``scripts/fuzz.py`` (the fuzzer at scale is run by hand; figures in the
README): cold and warm sessions, typed calls of every wrapper, mutated SPS payloads and
mutated headers, with zero crashes, hangs, tracebacks and stdout output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[2] / "scripts" / "fuzz.py"


def test_fuzz_smoke(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(FUZZ), "--inputs", "4000", "--per-session", "400", "--json",
         "--max-rss", "256", "--failures", str(tmp_path / "failures")],
        capture_output=True, timeout=240, cwd=tmp_path,
    )
    stats = json.loads(r.stdout.decode().strip().splitlines()[-1])
    # The problems first: pytest shortens long dicts in its summary.
    assert r.returncode == 0, (stats.get("problems"), stats, r.stderr.decode()[-3000:])
    assert stats["inputs"] == 4000
    assert stats["sessions_cold"] >= 5 and stats["sessions_warm"] >= 5
    assert stats["typed"] and stats["payload"]
    for key in ("crashes", "hangs", "tracebacks", "stdout_bytes", "bad_exit"):
        assert stats[key] == 0, stats
    assert 0 < stats["max_rss_mib"] <= 256
