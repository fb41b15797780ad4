"""Nothing lost: SIGKILL in the middle of an in-place rewrite leaves the old file or the new one.

``rewriter apply freeze --set upto=... --in-place`` is killed at random moments, 200 times, over
its whole run (reading, verifying, writing the temporary file, renaming). After every kill the
file must be byte-for-byte the original or byte-for-byte the complete result, with its mode and
line endings; a symlink still points at it. The only debris a kill may leave is a temporary
``.NAME.*.tmp`` file next to it (SIGKILL cannot be caught; the target is never touched before
the atomic rename).

To kill at many different moments cheaply, a helper process imports the CLI once and forks a
child per attempt (a fresh interpreter per attempt would spend the whole budget on imports).
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO

SEED = REPO / "examples" / "seed_net.prototxt"
UPTO = "pool2/3x3_s2"

# The helper: imports the CLI once; for each delay it restores the original file, forks a child
# that runs the command, kills the child after that delay (None: lets it finish), then inspects
# the file from outside the killed process and prints one JSON line per attempt.
_HELPER = textwrap.dedent(
    """
    import json, os, signal, stat, sys, time
    sys.path.insert(0, {repo!r})
    from rewriter.cli import main
    from rewriter.cli.commands import load_all
    load_all()
    job = json.loads(sys.stdin.read())
    target, link, mode = job["target"], job["link"], job["mode"]
    original, expected = bytes.fromhex(job["original"]), bytes.fromhex(job["expected"])
    # Warm up once (its own output file): the command's lazy imports then happen here, and
    # each forked child starts with them done.
    sys.argv = ["rewriter"] + job["warmup"]
    try:
        main()
    except SystemExit:
        pass
    def attempt(delay):
        with open(target, "wb") as fh:
            fh.write(original)
        os.chmod(target, mode)
        pid = os.fork()
        if pid == 0:
            sys.argv = ["rewriter"] + job["args"]
            code = 0
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                code = 99
            os._exit(code)
        start = time.perf_counter()
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        took = time.perf_counter() - start
        if delay is None:
            return took
        with open(target, "rb") as fh:
            data = fh.read()
        state = "original" if data == original else "result" if data == expected else "OTHER"
        folder = os.path.dirname(target)
        debris = sorted(n for n in os.listdir(folder) if n != os.path.basename(target))
        for n in debris:
            os.unlink(os.path.join(folder, n))
        print(json.dumps({{
            "delay": delay,
            "killed": os.WIFSIGNALED(status),
            "code": None if os.WIFSIGNALED(status) else os.WEXITSTATUS(status),
            "took": took,
            "state": state,
            "mode": stat.S_IMODE(os.stat(target).st_mode),
            "link_ok": os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target),
            "debris": debris,
        }}), flush=True)

    # Calibrate in this very process: how long one complete run takes; the job gives kill
    # times as fractions of that.
    full = sorted(attempt(None) for _ in range(5))[2]
    print(json.dumps({{"full": full}}), flush=True)
    for fraction in job["fractions"]:
        attempt(fraction * full)
    """
)


def _run_attempts(
    args: list[str],
    fractions: list[float],
    target: Path,
    link: Path,
    original: bytes,
    expected: bytes,
    mode: int,
) -> list[dict[str, Any]]:
    warm = target.parent.parent / "warmup.prototxt"
    job = {
        "args": args,
        "warmup": [a for a in args[:-1] if a != "--in-place"] + [str(target), "-o", str(warm)],
        "fractions": fractions,
        "target": str(target),
        "link": str(link),
        "original": original.hex(),
        "expected": expected.hex(),
        "mode": mode,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _HELPER.format(repo=str(REPO))],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=target.parent.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(out) == len(fractions) + 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _setup(tmp_path: Path) -> tuple[Path, Path, bytes, bytes, int]:
    """A CRLF copy of the seed net, mode 0640, reached through a symlink; and the result."""
    real_dir = tmp_path / "nets"
    real_dir.mkdir()
    target = real_dir / "seed.prototxt"
    original = SEED.read_bytes().replace(b"\n", b"\r\n")
    mode = 0o640
    target.write_bytes(original)
    target.chmod(mode)
    link = tmp_path / "link.prototxt"
    link.symlink_to(target)
    expected_path = tmp_path / "expected.prototxt"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewriter.cli",
            "apply",
            "freeze",
            "--set",
            f"upto={UPTO}",
            str(target),
            "-o",
            str(expected_path),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    expected = expected_path.read_bytes()
    expected_path.unlink()
    assert expected != original
    assert expected.count(b"\n") == expected.count(b"\r\n")  # the result keeps CRLF too
    return target, link, original, expected, mode


def test_sigkill_during_in_place_apply_loses_nothing(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    target, link, original, expected, mode = _setup(tmp_path)
    args = ["apply", "freeze", "--set", f"upto={UPTO}", "--in-place", "-q", str(link)]

    rng = random.Random(20261125)
    n = 200
    # Kill times as fractions of one complete run (measured by the helper): spread over the whole
    # run, a third aimed at its end (writing the temporary file, the rename, the exit), a few
    # after it (those runs complete: the result must then be whole).
    fractions = [
        rng.uniform(0.8, 1.05)
        if i % 3 == 0
        else rng.uniform(1.2, 2.0)
        if i % 10 == 1
        else rng.uniform(0, 1.1)
        for i in range(n)
    ]
    calibration, *results = _run_attempts(args, fractions, target, link, original, expected, mode)
    assert 0 < calibration["full"] < 5, calibration
    for r in results:
        assert r["state"] in ("original", "result"), r  # never a partial or mixed file
        assert r["mode"] == mode, r
        assert r["link_ok"], r
        assert all(d.startswith(".seed.prototxt.") and d.endswith(".tmp") for d in r["debris"])
        if not r["killed"]:
            assert r["code"] == 0 and r["state"] == "result", r
    killed = [r for r in results if r["killed"]]
    summary = (calibration, [(round(r["delay"], 4), r["killed"], r["state"]) for r in results])
    assert len(killed) >= n // 3, summary
    # Kills landed before the rename (the old file), and some runs completed (the result).
    assert "original" in {r["state"] for r in killed}, summary
    assert "result" in {r["state"] for r in results}, summary


def test_sigkill_during_large_atomic_writes(tmp_path: Path) -> None:
    """write_text_atomic of 8 MB files, killed mid-write 100 times: never a mixed file."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    target = tmp_path / "big.prototxt"
    a = "# A\n" + "layer { name: 'a' }\r\n" * 400_000
    target.write_text(a, newline="")
    target.chmod(0o600)
    script = textwrap.dedent(
        f"""
        import os, random, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from rewriter.text.fileio import write_text_atomic
        a = "# A\\n" + "layer {{ name: 'a' }}\\r\\n" * 400_000
        b = "# B\\n" + "layer {{ name: 'b' }}\\r\\n" * 400_000
        rng = random.Random(7)
        t0 = time.perf_counter(); write_text_atomic({str(target)!r}, a)
        full = time.perf_counter() - t0
        for i in range(100):
            pid = os.fork()
            if pid == 0:
                for k in range(1000):
                    write_text_atomic({str(target)!r}, b if k % 2 == 0 else a)
                os._exit(0)
            time.sleep(rng.uniform(0, full * 3))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with open({str(target)!r}, "rb") as fh:
                data = fh.read()
            ok = data in (a.encode(), b.encode())
            debris = [n for n in os.listdir({str(tmp_path)!r}) if n.endswith(".tmp")]
            for n in debris:
                os.unlink(os.path.join({str(tmp_path)!r}, n))
            print("OK" if ok else "BAD", len(data), len(debris), flush=True)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert sum(line.startswith("OK") for line in lines) == 100, proc.stdout[-2000:]
    # Some kills landed in the middle of writing a temporary file (it was left behind).
    assert sum(int(line.split()[2]) for line in lines if line) > 10, proc.stdout[-2000:]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    """``--check`` reports (exit 1) and leaves the file, its mode and its time stamp alone."""
    target, _, original, _, mode = _setup(tmp_path)
    before = target.stat().st_mtime_ns
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewriter.cli",
            "apply",
            "freeze",
            "--set",
            f"upto={UPTO}",
            "--check",
            str(target),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert target.read_bytes() == original
    assert target.stat().st_mtime_ns == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["seed.prototxt"]
