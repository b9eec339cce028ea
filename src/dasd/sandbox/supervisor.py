"""Run untrusted, model-written Python (with its tests) in a separate, fenced-in process.

`run_python(source)` writes `source` to a fresh temporary folder, runs it with
`python -I -B` (no user site, no PYTHON* variables) under a minimal environment (HOME and
TMPDIR are that folder), and removes the folder afterwards. The program passes only when
its last statement returned normally: the sandbox then writes a completion report with a
per-run token the program never sees (`child._steps`); without that report a run
is no pass, whatever its exit status (an `assert` that fails makes it "failed"; exit(),
os._exit() or a crash before the end make it "error").

What is protected, on Linux (`child.py` does it; `SandboxResult.protections`
says which layer each run got):

- time: a wall-clock timeout kills the whole process group, and RLIMIT_CPU ends CPU hogs;
- processes: RLIMIT_NPROC bounds fork bombs (root runs the program as `nobody`, since the
  kernel exempts root from that limit); in a PID namespace nothing outlives the run;
  Landlock (ABI 6+) refuses signals to processes outside the sandbox, seccomp refuses
  ptrace and process_vm_*;
- memory: RLIMIT_AS (a MemoryError, or the kernel's refusal);
- disk: RLIMIT_FSIZE per file; with namespaces the work folder is a tmpfs of that size;
- output: at most `max_output_bytes` of stdout and of stderr are read; a program that
  prints more is killed ("output-limit"), nothing is buffered beyond the cap;
- filesystem: with namespaces every mount is read-only and only the work folder is
  writable; Landlock (kernel 5.13+, in both modes) allows writes only in the work folder
  and no access to /proc; a Python guard adds readable refusals in the fallback;
- network: with namespaces the program has an empty network namespace (no interface
  up, not even loopback to the host's); seccomp refuses every socket but AF_UNIX, and
  Landlock (ABI 4+) TCP bind and connect, in both modes;
- the verdict: an audit hook refuses what could reach the report's token or skip the
  asserts from Python (gc object walks, ctypes, /proc/self/mem, code objects, bytecode
  and extension modules the program wrote, trace functions).

Not protected: reading files that `nobody` (or your user, when not root) may read; a
program that corrupts the interpreter's memory through a CPython memory-safety bug could
still forge the report, and so could one that reads its own memory where Landlock is
missing (the audit hook's /proc check is then best-effort: a symlink or a dir fd gets
past it) or that writes into the interpreter's folders where Landlock is missing and its
user owns them; asserts are only as strong as the objects they compare (a returned
object whose `__eq__` is always true, or a builtin the program shadows, passes them); CPU
time of a run can be up to `max_processes` x `cpu_seconds` before the wall clock ends
it; without a PID namespace, a process that leaves the group with `setsid()` survives
the run. Namespaces need Linux (kernel 5.12+) with unprivileged user namespaces, or root
(Docker's default seccomp profile refuses them); Landlock and seccomp need a kernel that
has them and a container profile that allows them: where one is missing the result says
"unavailable" and a warning names it once, and without both only the rlimits and guards
hold in the fallback. Do not run code you would not run on your own account without a
container or VM.

The interpreter: programs run with `SandboxSettings.python`, by default this one when it
can import the standard library in the sandbox, else the system python3 (root runs
programs as `nobody`, who cannot read a pyenv under /root); `sandbox_python` checks the
choice once per process and raises DasdError when nothing works.

Calls are independent: any number of threads or processes may run sandboxes at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dasd.errors import DasdError

log = logging.getLogger(__name__)
CHILD = Path(__file__).with_name("child.py")
NOBODY = 65534
_DRAIN_SECONDS = 1.0
Status = Literal["passed", "failed", "error", "timeout", "memory", "output-limit", "killed"]
# Exit codes of child.py naming a failure (and 128 + signal for a program killed by
# a signal). Exit code 0 is no pass by itself: only the completion report is (`_read_info`).
_STATUS_BY_CODE: dict[int, Status] = {1: "failed", 2: "error", 3: "memory", 4: "error",
                                      128 + signal.SIGXCPU: "timeout",
                                      128 + signal.SIGKILL: "killed"}
_NO_REPORT = b"\nsandbox: the program ended before its tests finished (no completion report)\n"
# Imported by the interpreter check: modules correct MBPP solutions commonly use.
_COMMON_MODULES = ("heapq", "re", "collections", "itertools", "math", "shutil", "functools",
                   "bisect", "string", "json", "random", "fractions", "decimal", "statistics",
                   "operator", "typing", "dataclasses", "copy", "datetime", "array", "cmath")
_PROBE = (f"import {', '.join(_COMMON_MODULES)}\n"
          "assert heapq.nsmallest(1, [3, 1]) == [1] and math.gcd(4, 6) == 2\n")
_chosen: dict[tuple[str | None, bool], str] = {}
_choosing = threading.Lock()
_warned: set[tuple[str, str]] = set()


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
        "help": "isolate with Linux namespaces when the OS allows it (False: rlimits, "
                "Landlock, seccomp and Python guards only; for tests of the fallback)"})
    python: str | None = field(default=None, metadata={
        "help": "interpreter that runs the programs; None: this one when it can import the "
                "standard library in the sandbox (as `nobody` when root), else the system "
                "python3 (checked once per process, see `sandbox_python`)"})

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
    python: str = ""


def run_python(source: str, settings: SandboxSettings | None = None) -> SandboxResult:
    """Run `source` as a Python program in a throwaway folder under `settings`' limits."""
    settings = settings or SandboxSettings()
    return _run(source, settings, sandbox_python(settings))


def sandbox_python(settings: SandboxSettings | None = None) -> str:
    """The interpreter that runs programs under `settings`, chosen and checked once per
    process: `settings.python`, or by default this interpreter, else the system python3.

    The check runs a program importing common standard-library modules in the sandbox
    itself, so it fails where the program's user cannot read the interpreter (root runs
    programs as `nobody`, who cannot enter /root where pyenv lives). Raises DasdError,
    before any program runs, when no candidate works.
    """
    settings = settings or SandboxSettings()
    key = (settings.python, settings.namespaces)
    with _choosing:
        if key not in _chosen:
            _chosen[key] = _choose_python(settings)
        return _chosen[key]


def _choose_python(settings: SandboxSettings) -> str:
    candidates = [settings.python] if settings.python else _default_pythons()
    check = SandboxSettings(namespaces=settings.namespaces)  # default limits: a fair test
    problems = []
    for python in candidates:
        path = shutil.which(python)
        problem = _python_problem(path, check) if path else "is not an executable file"
        if problem is None:
            if problems:
                log.warning("sandbox: %s; programs run with %s", problems[0], path)
            return path
        problems.append(f"{python} {problem}")
    who = "user nobody (root runs programs as nobody)" if os.geteuid() == 0 else "the sandbox"
    raise DasdError(f"no Python interpreter works in the sandbox for {who}: "
                    f"{'; '.join(problems)}; set SandboxSettings.python to an interpreter "
                    "outside /root, e.g. /usr/bin/python3")


def _default_pythons() -> list[str]:
    """This interpreter, then system ones (which `nobody` can read), each file once."""
    found, seen = [], set()
    for path in (sys.executable, shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin"),
                 "/usr/bin/python3", "/usr/local/bin/python3"):
        if path and os.path.isfile(path) and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            found.append(path)
    return found


def _python_problem(python: str, settings: SandboxSettings) -> str | None:
    """None when `python` runs the check program in the sandbox, else what went wrong."""
    try:
        result = _run(_PROBE, settings, python)
    except DasdError:
        return "cannot be started"
    if result.passed:
        return None
    lines = (result.stderr.strip() or result.status).splitlines()
    return f"cannot import the standard library in the sandbox ({lines[-1]})"


def _run(source: str, settings: SandboxSettings, python: str) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="dasd-sandbox-")
    try:
        Path(workdir, "program.py").write_text(source, encoding="utf-8")
        if os.geteuid() == 0:  # the program runs as nobody and needs its folder
            os.chown(workdir, NOBODY, NOBODY)
            os.chmod(Path(workdir, "program.py"), 0o644)
        return _supervise(workdir, settings, python)
    finally:
        _remove(workdir)


def _supervise(workdir: str, settings: SandboxSettings, python: str) -> SandboxResult:
    info_read, info_write = os.pipe()
    child_settings = {"workdir": workdir, "info_fd": info_write, **{
        name: getattr(settings, name) for name in ("cpu_seconds", "memory_mb", "max_processes",
                                                   "max_file_mb", "max_open_files",
                                                   "namespaces")}}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
           "LANG": "C.UTF-8"}
    start = time.monotonic()
    _become_subreaper()
    try:
        proc = subprocess.Popen(  # -u: a passing run exits without flushing its output
            [python, "-I", "-B", "-u", str(CHILD), json.dumps(child_settings)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(info_write,), start_new_session=True)
    except OSError as error:
        os.close(info_read)
        raise DasdError(f"cannot start the sandbox interpreter {python}: {error}; "
                        "set SandboxSettings.python to a working Python") from None
    finally:
        os.close(info_write)
    try:
        out, err, info, cut = _collect(proc, info_read, settings, start + settings.timeout)
    finally:
        _kill_group(proc.pid)
        proc.wait()
        _wait_group_gone(proc.pid)
        _reap_group(proc.pid)
        for handle in (proc.stdout, proc.stderr):
            handle.close()
        os.close(info_read)
    out, err = out[:settings.max_output_bytes], err[:settings.max_output_bytes]
    return _result(proc.returncode, cut, out, err, info, time.monotonic() - start, python)


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


@functools.cache
def _become_subreaper() -> bool:
    """Make this process the parent of the sandbox's orphans (Linux 3.4+: they are
    reparented here, not to init), so a run can reap its own zombies before it returns.
    Init may reap them late or never (a container's PID 1 often does not)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_group(pgid: int) -> None:
    """Collect the exit status of every dead process of the run's group that is our
    child (the launcher's orphans, once this process is their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid == 0:
            return  # none dead (the group is gone, so none left to wait for)


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
            seconds: float, python: str) -> SandboxResult:
    facts, completed = _read_info(info)
    if cut:
        status: Status = cut  # type: ignore[assignment]
    elif completed and code == 0:
        status = "passed"
    elif code == 0:  # it exited "successfully" without running to its end
        status, err = "error", err + _NO_REPORT
    else:
        status = _STATUS_BY_CODE.get(code, "error")
    _warn_missing_layers(facts)
    return SandboxResult(passed=status == "passed", status=status,
                         stdout=out.decode("utf-8", "replace"),
                         stderr=err.decode("utf-8", "replace"), seconds=seconds,
                         exit_code=code, truncated=cut == "output-limit",
                         protections=_protections(facts), python=python)


def _read_info(info: bytes) -> tuple[dict[str, Any], bool]:
    """(facts, completed) from the info pipe.

    The sandbox writes facts about its layers, the last of them holding a fresh token,
    before the program starts; after the program's last statement returned it writes
    {"done": token} (`child._steps`). Only lines up to the token are trusted (the
    program may write on the pipe too, but not knowing the token it cannot complete).
    """
    facts: dict[str, Any] = {}
    lines = iter(info.decode("utf-8", "replace").splitlines())
    for line in lines:
        fact = _json_object(line)
        facts.update(fact)
        if "token" in fact:
            break
    token = facts.pop("token", None)
    if not isinstance(token, str) or len(token) < 32:
        return facts, False
    report = json.dumps({"done": token})
    return facts, any(line == report for line in lines)


def _json_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _protections(facts: dict[str, Any]) -> dict[str, str]:
    """Which layer guarded the network, the filesystem and processes in this run, what
    Landlock and seccomp applied (or why not), and what the verdict rests on."""
    namespaces = bool(facts.get("namespaces"))
    landlock = str(facts.get("landlock", "not applied"))
    seccomp = str(facts.get("seccomp", "not applied"))
    if namespaces:
        network = "namespace"
    elif seccomp.startswith("on"):
        network = "seccomp"
    else:
        network = "landlock (tcp)" if "no tcp" in landlock else "guard"
    filesystem = ("read-only mounts" if facts.get("filesystem")
                  else "landlock" if landlock.startswith("abi") else "guard")
    return {"network": network, "filesystem": filesystem,
            "processes": "pid namespace" if namespaces else "process group",
            "landlock": landlock, "seccomp": seccomp, "verdict": "completion report"}


def _warn_missing_layers(facts: dict[str, Any]) -> None:
    """One warning per process and cause when the kernel lacks Landlock or seccomp."""
    for layer, name, cost in (
            ("landlock", "Landlock", "/proc is refused only by a best-effort check, and "
             "without namespaces writes outside the work folder only by file permissions "
             "and a Python guard"),
            ("seccomp", "seccomp", "without namespaces, only a Python guard refuses "
             "sockets")):
        value = str(facts.get(layer, ""))
        if value.startswith("unavailable") and (layer, value) not in _warned:
            _warned.add((layer, value))
            log.warning("sandbox: %s %s: %s", name, value, cost)


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
