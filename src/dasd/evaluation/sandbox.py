"""Run untrusted, model-written Python (with its tests) in a separate, fenced-in process.

`run_python(source)` writes `source` to a fresh temporary folder, runs it with
`python -I -B` (no user site, no PYTHON* variables) under a minimal environment (HOME and
TMPDIR are that folder), and removes the folder afterwards. The program passes when it
runs to the end without an exception; an `assert` that fails makes it "failed".

What is protected, on Linux (`sandbox_child.py` does it; `SandboxResult.protections`
says which layer each run got):

- time: a wall-clock timeout kills the whole process group, and RLIMIT_CPU ends CPU hogs;
- processes: RLIMIT_NPROC bounds fork bombs (root runs the program as `nobody`, since the
  kernel exempts root from that limit); in a PID namespace nothing outlives the run;
- memory: RLIMIT_AS (a MemoryError, or the kernel's refusal);
- disk: RLIMIT_FSIZE per file; with namespaces the work folder is a tmpfs of that size;
- output: at most `max_output_bytes` of stdout and of stderr are read; a program that
  prints more is killed ("output-limit"), nothing is buffered beyond the cap;
- filesystem: with namespaces every mount is read-only and only the work folder is
  writable; without them, root's `nobody` cannot write root's folders, and a Python guard
  refuses writes outside the work folder (bypassable through ctypes or `_io`);
- network: with namespaces the program has an empty network namespace (no interface
  up, not even loopback to the host's); without them, a Python guard replaces
  `socket.socket` (bypassable the same way).

Not protected: reading files that `nobody` (or your user, when not root) may read; a
program that ends with `os._exit(0)` before its asserts run counts as passed (exit() and
SystemExit are caught and count as errors); CPU time of a run can be up to
`max_processes` x `cpu_seconds` before the wall clock ends it; without a PID namespace,
a process that leaves the group with `setsid()` survives the run. Namespaces need Linux
(kernel 5.12+) with unprivileged user namespaces, or root (Docker's default seccomp
profile refuses them); elsewhere only the rlimits and guards apply, and a root run whose
Python lives where `nobody` cannot read (pyenv under /root) cannot import modules that
the sandbox did not load itself. Do not run code you would not run on your own account
without a container or VM.

Calls are independent: any number of threads or processes may run sandboxes at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.errors import DasdError

log = logging.getLogger(__name__)
CHILD = Path(__file__).with_name("sandbox_child.py")
NOBODY = 65534
_DRAIN_SECONDS = 1.0
Status = Literal["passed", "failed", "error", "timeout", "memory", "output-limit", "killed"]
# Exit codes of sandbox_child.py (and 128 + signal for a program killed by a signal).
_STATUS_BY_CODE: dict[int, Status] = {0: "passed", 1: "failed", 2: "error", 3: "memory",
                                      4: "error", 128 + signal.SIGXCPU: "timeout",
                                      128 + signal.SIGKILL: "killed"}


@dataclass(frozen=True)
class SandboxSettings:
    """Limits of one run. The defaults suit MBPP-sized programs (a few asserts)."""

    timeout: float = field(default=10.0, metadata={"help": "wall-clock seconds per run"})
    cpu_seconds: int = field(default=10, metadata={"help": "RLIMIT_CPU of the program"})
    memory_mb: int = field(default=512, metadata={"help": "address space (RLIMIT_AS), MB"})
    max_processes: int = field(default=32, metadata={
        "help": "RLIMIT_NPROC: processes and threads of the program's user (bounds fork bombs)"})
    max_file_mb: int = field(default=16, metadata={
        "help": "largest file the program may write (RLIMIT_FSIZE), and its tmpfs size"})
    max_open_files: int = field(default=64, metadata={"help": "RLIMIT_NOFILE"})
    max_output_bytes: int = field(default=64_000, metadata={
        "help": "bytes of stdout and of stderr kept; printing more kills the program"})
    namespaces: bool = field(default=True, metadata={
        "help": "isolate with Linux namespaces when the OS allows it (False: rlimits and "
                "Python guards only; for tests of the fallback)"})
    python: str = field(default=sys.executable, metadata={"help": "interpreter to run"})

    def __post_init__(self) -> None:
        for name in ("timeout", "cpu_seconds", "memory_mb", "max_processes", "max_file_mb",
                     "max_open_files", "max_output_bytes"):
            if getattr(self, name) <= 0:
                raise DasdError(f"sandbox {name} must be positive, got {getattr(self, name)}")
        if self.memory_mb < 64:
            raise DasdError(f"sandbox memory_mb={self.memory_mb} is too small to start "
                            "Python: give 64 or more")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run: `passed` is True only for a program that ran to its end."""

    passed: bool
    status: Status
    stdout: str
    stderr: str
    seconds: float
    exit_code: int | None
    truncated: bool = False
    protections: dict[str, str] = field(default_factory=dict)


def run_python(source: str, settings: SandboxSettings | None = None) -> SandboxResult:
    """Run `source` as a Python program in a throwaway folder under `settings`' limits."""
    settings = settings or SandboxSettings()
    workdir = tempfile.mkdtemp(prefix="dasd-sandbox-")
    try:
        Path(workdir, "program.py").write_text(source, encoding="utf-8")
        if os.geteuid() == 0:  # the program runs as nobody and needs its folder
            os.chown(workdir, NOBODY, NOBODY)
            os.chmod(Path(workdir, "program.py"), 0o644)
        return _supervise(workdir, settings)
    finally:
        _remove(workdir)


def _supervise(workdir: str, settings: SandboxSettings) -> SandboxResult:
    info_read, info_write = os.pipe()
    child_settings = {"workdir": workdir, "info_fd": info_write, **{
        name: getattr(settings, name) for name in ("cpu_seconds", "memory_mb", "max_processes",
                                                   "max_file_mb", "max_open_files",
                                                   "namespaces")}}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8"}
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            [settings.python, "-I", "-B", str(CHILD), json.dumps(child_settings)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(info_write,), start_new_session=True)
    except OSError as error:
        os.close(info_read)
        raise DasdError(f"cannot start the sandbox interpreter {settings.python}: {error}; "
                        "set SandboxSettings.python to a working Python") from None
    finally:
        os.close(info_write)
    try:
        out, err, info, cut = _collect(proc, info_read, settings, start + settings.timeout)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        _wait_group_gone(proc.pid)
        for handle in (proc.stdout, proc.stderr):
            handle.close()
        os.close(info_read)
    out, err = out[:settings.max_output_bytes], err[:settings.max_output_bytes]
    return _result(proc.returncode, cut, out, err, info, time.monotonic() - start)


def _collect(proc: subprocess.Popen, info_fd: int, settings: SandboxSettings,
             deadline: float) -> tuple[bytes, bytes, bytes, str | None]:
    """Read stdout, stderr and the info pipe until all close, the deadline or the cap.

    Returns (stdout, stderr, info, cut) where cut is None, "timeout" or "output-limit".
    Once the launcher has exited, its group is killed and the pipes get `_DRAIN_SECONDS`
    to close: a process that escaped the group (or any process that inherited a pipe)
    cannot make a finished run wait for its timeout.
    """
    caps = {proc.stdout.fileno(): settings.max_output_bytes,
            proc.stderr.fileno(): settings.max_output_bytes, info_fd: 4096}
    buffers = {fd: bytearray() for fd in caps}
    cut, drain_until = None, None
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and cut is None:
            now = time.monotonic()
            if drain_until is not None and now > drain_until:
                break
            if now >= deadline:
                cut = "timeout"
                break
            for key, _ in selector.select(min(deadline - now, 0.1)):
                if _read_into(key.fd, buffers[key.fd], caps[key.fd]) is None:
                    selector.unregister(key.fd)
                elif len(buffers[key.fd]) > caps[key.fd] and key.fd != info_fd:
                    cut = "output-limit"
            if drain_until is None and _has_exited(proc.pid):
                _kill_group(proc.pid)
                drain_until = time.monotonic() + _DRAIN_SECONDS
    return (bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]),
            bytes(buffers[info_fd]), cut)


def _read_into(fd: int, buffer: bytearray, cap: int) -> int | None:
    """Read what `fd` has, keeping at most `cap` bytes in `buffer` (one byte more marks
    an overflow); None at end of file."""
    chunk = os.read(fd, 65536)
    if not chunk:
        return None
    buffer += chunk[:max(cap + 1 - len(buffer), 0)]
    return len(chunk)


def _has_exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its process group id stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_group_gone(pgid: int, limit: float = 5.0) -> None:
    """Return once no live process of the run's group is left (killed processes take a
    moment to exit, a PID namespace's init the longest), so a run ends with nothing behind.
    Zombies count as gone: orphans are reaped by the host's init, on its own schedule."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not _group_alive(pgid):
            return
        time.sleep(0.005)
    log.warning("sandbox processes of group %d were still exiting after %.0f s", pgid, limit)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (Linux: from /proc, zombies aside)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _result(code: int | None, cut: str | None, out: bytes, err: bytes, info: bytes,
            seconds: float) -> SandboxResult:
    status: Status = cut or _STATUS_BY_CODE.get(code, "error")  # type: ignore[assignment]
    return SandboxResult(passed=status == "passed", status=status,
                         stdout=out.decode("utf-8", "replace"),
                         stderr=err.decode("utf-8", "replace"), seconds=seconds,
                         exit_code=code, truncated=cut == "output-limit",
                         protections=_protections(info))


def _protections(info: bytes) -> dict[str, str]:
    """Which layer guarded the network and the filesystem in this run."""
    facts: dict[str, Any] = {}
    for line in info.decode("utf-8", "replace").splitlines():
        try:
            facts.update(json.loads(line))
        except json.JSONDecodeError:
            continue
    namespaces = bool(facts.get("namespaces"))
    return {"network": "namespace" if namespaces else "guard",
            "filesystem": "read-only mounts" if facts.get("filesystem") else "guard",
            "processes": "pid namespace" if namespaces else "process group"}


def _remove(workdir: str) -> None:
    """Delete the work folder, even parts the program made read-only (fallback mode)."""
    def unlock(function, path, _error):
        for folder in (os.path.dirname(path), path):
            if os.path.isdir(folder):
                os.chmod(folder, 0o700)
        function(path)

    try:
        shutil.rmtree(workdir, onerror=unlock)
    except OSError as error:
        log.warning("could not remove sandbox folder %s: %s", workdir, error)
