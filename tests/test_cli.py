"""The py9pfuse command as a user runs it: a real subprocess."""

from __future__ import annotations

import pathlib
import subprocess
import sys

CAPTURES = pathlib.Path(__file__).parent / "captures"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "py9pfuse", *args], capture_output=True,
                          text=True, timeout=60)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("py9pfuse, version ")


def test_decode_prints_one_trace_line_per_frame():
    path = CAPTURES / "diod.9p"
    frames = [ln for ln in path.read_text().splitlines() if ln[:2] in ("T ", "R ")]
    r = run("decode", str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(frames)
    assert lines[0].startswith("<-0- Tversion tag 65535 msize ")
    assert lines[1].startswith("-0-> Rversion tag 65535 msize 65536 version '9P2000.L'")


def test_decode_of_a_broken_capture_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.9p"
    bad.write_text("dialect 9P2000\nT 08000000 78 0100 01\n")  # Tclunk with a 1-byte fid
    r = run("decode", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"py9pfuse: {bad}: Tclunk tag 1: fid needs 4 bytes but only 1 remain (at byte 7 of 8)"]
