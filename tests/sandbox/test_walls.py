"""The code sandbox: hostile programs fail their run without harming the host or the test.

Every case runs twice: with the kernel isolation the OS allows ("namespaces") and with the
fallback alone (rlimits, Landlock, seccomp and Python guards, `namespaces=False`), so the
fallback is exercised even where namespaces work. Where a guarantee depends on the layer,
the test reads `result.protections` and asserts what that layer promises; nothing is
skipped. Fake passes are in test_sandbox_verdict.py, the fallback's kernel walls and the
interpreter choice in test_sandbox_fallback.py.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.sandbox import SandboxSettings, run_python

QUICK = SandboxSettings(timeout=3.0, cpu_seconds=2, memory_mb=256, max_processes=16,
                        max_file_mb=1, max_output_bytes=4096)


@pytest.fixture(params=["namespaces", "fallback"])
def limits(request: pytest.FixtureRequest) -> SandboxSettings:
    return replace(QUICK, namespaces=request.param == "namespaces")


def _sandbox_processes() -> list[str]:
    """Command lines of live sandbox processes (none may outlive a run)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"sandbox/child.py" in cmdline:
            found.append(cmdline.decode(errors="replace"))
    return found


def _zombies() -> set[int]:
    """Pids of zombie processes on the machine (exited, not yet reaped by their parent)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if stat.rsplit(b")", 1)[1].split()[0] == b"Z":
            found.add(int(entry.name))
    return found


def test_correct_program_passes(limits: SandboxSettings) -> None:
    result = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
                        "print('ok')\n", limits)
    assert (result.passed, result.status, result.exit_code) == (True, "passed", 0)
    assert result.stdout == "ok\n" and not result.truncated


def test_wrong_assert_fails(limits: SandboxSettings) -> None:
    result = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n", limits)
    assert (result.passed, result.status) == (False, "failed")
    assert "AssertionError" in result.stderr and 'File "program.py", line 4' in result.stderr


@pytest.mark.parametrize(("source", "message"), [
    ("raise ValueError('boom')", "ValueError: boom"),
    ("def f(:\n  pass", "SyntaxError"),
    ("import sys\nsys.exit(0)\nassert False", "exit() before its tests finished"),
])
def test_errors_and_early_exit_do_not_pass(source: str, message: str) -> None:
    result = run_python(source, QUICK)
    assert (result.passed, result.status) == (False, "error")
    assert message in result.stderr


def test_infinite_loop_times_out(limits: SandboxSettings) -> None:
    result = run_python("while True:\n    pass\n", replace(limits, timeout=1.5, cpu_seconds=30))
    assert (result.passed, result.status) == (False, "timeout")
    assert 1.4 < result.seconds < 3.5
    assert _sandbox_processes() == []


def test_cpu_limit_ends_a_busy_loop_before_the_wall_clock() -> None:
    result = run_python("while True:\n    pass\n", replace(QUICK, timeout=20, cpu_seconds=1))
    assert result.status == "timeout" and result.exit_code == 128 + 24  # SIGXCPU
    assert result.seconds < 5


def test_blocked_program_times_out(limits: SandboxSettings) -> None:
    """A program that waits forever without using CPU is ended by the wall clock."""
    result = run_python("import os\nos.read(os.pipe()[0], 1)\n", replace(limits, timeout=1.0))
    assert result.status == "timeout" and result.seconds < 3
    assert _sandbox_processes() == []


@pytest.mark.parametrize("source", [
    "import os\nwhile True:\n    os.fork()\n",
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
])
def test_fork_bomb_is_bounded_and_cleaned_up(limits: SandboxSettings, source: str) -> None:
    zombies = _zombies()
    start = time.monotonic()
    result = run_python(source, replace(limits, timeout=2.0))
    assert not result.passed and result.status in ("error", "timeout")
    assert time.monotonic() - start < 6
    assert _sandbox_processes() == []  # no fork survives the run
    assert _zombies() <= zombies, "the run returned before its processes were reaped"
    # the host can still start processes
    assert run_python("assert 1 + 1 == 2", QUICK).passed


@pytest.mark.parametrize("source", [
    "x = bytearray(2 * 1024 ** 3)\n",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
])
def test_memory_hog_is_stopped(limits: SandboxSettings, source: str) -> None:
    result = run_python(source, limits)
    assert (result.passed, result.status) == (False, "memory")
    assert "MemoryError" in result.stderr


def test_writing_outside_its_folder_fails(limits: SandboxSettings, tmp_path: Path) -> None:
    """Neither a folder of the test nor a world-writable one outside the sandbox is written."""
    private = tmp_path / "outside"
    private.mkdir()
    shared = Path(tempfile.mkdtemp(prefix="dasd-test-shared-"))
    shared.chmod(0o777)  # writable by anyone, so only the sandbox itself can stop the write
    try:
        for folder in (private, shared):
            target = folder / "pwned.txt"
            result = run_python(f"open({str(target)!r}, 'w').write('owned')\n", limits)
            assert not result.passed and result.status == "error"
            assert not target.exists()
            if result.protections["filesystem"] == "read-only mounts" and folder == shared:
                assert "Read-only file system" in result.stderr
            else:  # the guard, or (private) a folder the program may not even enter
                assert "PermissionError" in result.stderr or "Read-only" in result.stderr
    finally:
        shared.chmod(0o700)
        for leftover in shared.iterdir():
            leftover.unlink()
        shared.rmdir()


def test_own_folder_is_writable_and_removed_afterwards(limits: SandboxSettings) -> None:
    result = run_python("import os\nopen('note.txt', 'w').write('kept')\n"
                        "assert open('note.txt').read() == 'kept'\nprint(os.getcwd())\n", limits)
    assert result.passed, result.stderr
    workdir = Path(result.stdout.strip())
    assert workdir.name.startswith("dasd-sandbox-") and not workdir.exists()


def test_socket_cannot_reach_a_local_listener(limits: SandboxSettings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        source = (f"import socket\nconnection = socket.create_connection(('127.0.0.1', {port}), "
                  "timeout=1)\nconnection.sendall(b'hello')\n")
        result = run_python(source, limits)
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()
    assert not result.passed and result.status == "error"
    expected = {"namespace": ("Network is unreachable", "Operation not permitted"),
                "seccomp": ("network access is disabled", "Operation not permitted"),
                "landlock (tcp)": ("network access is disabled", "Permission denied"),
                "guard": ("network access is disabled",)}[result.protections["network"]]
    assert any(message in result.stderr for message in expected), result.stderr


@pytest.mark.parametrize("stream", ["sys.stdout", "sys.stderr"])
def test_printing_gigabytes_is_cut_quickly(limits: SandboxSettings, stream: str) -> None:
    source = f"import sys\nwhile True:\n    {stream}.write('x' * 1_000_000)\n"
    result = run_python(source, replace(limits, timeout=30.0))
    assert (result.passed, result.status, result.truncated) == (False, "output-limit", True)
    assert result.seconds < 5  # the cap, not the 30 s timeout, ended it
    text = result.stdout if stream == "sys.stdout" else result.stderr
    assert text == "x" * 4096


def test_big_file_is_refused(limits: SandboxSettings) -> None:
    result = run_python("open('big.bin', 'wb').write(b'x' * 50_000_000)\n", limits)
    assert not result.passed and result.status == "error"
    assert "File too large" in result.stderr or "No space left" in result.stderr


def test_protections_are_reported() -> None:
    fallback = run_python("pass", replace(QUICK, namespaces=False)).protections
    assert fallback["processes"] == "process group"
    assert fallback["verdict"] == "completion report"
    landlock, seccomp = fallback["landlock"], fallback["seccomp"]
    assert landlock.startswith(("abi ", "unavailable: ")), landlock
    assert seccomp.startswith(("on: ", "unavailable: ")), seccomp
    assert fallback["filesystem"] == ("landlock" if landlock.startswith("abi") else "guard")
    if seccomp.startswith("on"):
        assert fallback["network"] == "seccomp"
    isolated = run_python("pass", QUICK).protections
    if isolated["network"] == "namespace":
        assert isolated["processes"] == "pid namespace"
    assert isolated["filesystem"] in ("read-only mounts", "landlock", "guard")


def test_parallel_runs_from_threads_stay_separate() -> None:
    sources = [f"print({i})\nassert {i} % 2 == 0\n" for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda s: run_python(s, QUICK), sources))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert [r.passed for r in results] == [True, False] * 3


@pytest.mark.parametrize("change", [{"timeout": 0}, {"memory_mb": 16}, {"max_output_bytes": -1}])
def test_bad_settings_are_refused(change: dict) -> None:
    with pytest.raises(DasdError, match="sandbox"):
        SandboxSettings(**change)


def test_missing_interpreter_is_a_one_line_error() -> None:
    with pytest.raises(DasdError, match="no Python interpreter works in the sandbox .*"
                       "/nonexistent/python is not an executable file") as error:
        run_python("pass", replace(QUICK, python="/nonexistent/python"))
    assert "\n" not in str(error.value)
    assert not any(p.name.startswith("dasd-sandbox-") and p.stat().st_mtime > time.time() - 5
                   for p in Path(tempfile.gettempdir()).iterdir())


def test_environment_is_minimal() -> None:
    os.environ["DASD_SECRET_TOKEN"] = "hunter2"
    try:
        result = run_python("import os\nprint(sorted(os.environ))\n", QUICK)
    finally:
        del os.environ["DASD_SECRET_TOKEN"]
    assert "DASD_SECRET_TOKEN" not in result.stdout and "'HOME'" in result.stdout


def test_output_exactly_at_the_cap_is_kept_whole() -> None:
    result = run_python("import sys\nsys.stdout.write('y' * 4096)\n", QUICK)
    assert (result.status, result.truncated, result.stdout) == ("passed", False, "y" * 4096)


def test_escaped_background_process_does_not_hold_the_run() -> None:
    """A grandchild in its own session (outside the killed group) keeps stdout open; the run
    still ends right after the program, and with namespaces the grandchild dies too."""
    source = ("import os\nif os.fork() == 0:\n    os.setsid()\n    os.read(os.pipe()[0], 1)\n"
              "print('done')\n")
    result = run_python(source, replace(QUICK, timeout=20.0))
    assert (result.status, result.stdout) == ("passed", "done\n")
    assert result.seconds < 5
    if result.protections["processes"] == "pid namespace":
        assert _sandbox_processes() == []
