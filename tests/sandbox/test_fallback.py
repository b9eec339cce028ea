"""The fallback's kernel walls (Landlock, seccomp) and the interpreter the programs run with.

The escapes are the plain-Python ones that got past the Python guards (no ctypes): a dir
fd, `_io`/`posix` directly, `socket.SocketType`. They run forced onto the fallback, where
only rlimits, the guards and the kernel filters stand; where the kernel lacks a filter,
the test checks that the result says so instead (`protections`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dasd.errors import DasdError
from dasd.sandbox import SandboxSettings, run_python, sandbox_python
from dasd.sandbox import kernel as sandbox_kernel
from dasd.sandbox import supervisor as sandbox

QUICK = SandboxSettings(timeout=5.0, cpu_seconds=4, memory_mb=256, max_processes=16,
                        max_file_mb=1, max_output_bytes=4096)
FALLBACK = replace(QUICK, namespaces=False)
SRC = Path(__file__).resolve().parents[2] / "src"
BENIGN = ("import heapq, re, collections, itertools, math, shutil\n"
          "assert heapq.nsmallest(2, [5, 1, 3]) == [1, 3]\n"
          "assert re.findall(r'\\d+', 'a1b22') == ['1', '22']\n"
          "assert collections.Counter('aab')['a'] == 2\n"
          "assert list(itertools.accumulate([1, 2, 3])) == [1, 3, 6]\n"
          "assert math.comb(5, 2) == 10 and shutil.which('sh')\n")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A world-writable folder outside the sandbox: only the sandbox can stop a write."""
    folder = Path(tempfile.mkdtemp(prefix="dasd-test-shared-"))
    folder.chmod(0o777)
    (folder / "victim.txt").write_text("keep me")
    yield folder
    shutil.rmtree(folder)


def _landlocked(result) -> bool:
    return result.protections["landlock"].startswith("abi")


def _layer_missing(result, layer: str) -> bool:
    """True where the kernel lacks `layer`: then the result must say so."""
    value = result.protections[layer]
    assert value.startswith(("abi", "on", "unavailable")), value
    return value.startswith("unavailable")


@pytest.mark.parametrize("source", [
    "import os\nfd = os.open({folder!r}, os.O_RDONLY)\n"
    "os.open('pwned.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd)\n",
    "import _io\n_io.open({folder!r} + '/pwned.txt', 'w').write('owned')\n",
    "import posix\nposix.open({folder!r} + '/pwned.txt', posix.O_CREAT | posix.O_WRONLY)\n",
])
def test_writes_outside_the_folder_are_refused_by_the_kernel(shared: Path, source: str) -> None:
    result = run_python(source.format(folder=str(shared)), FALLBACK)
    assert not result.passed
    if _layer_missing(result, "landlock"):
        return
    assert result.protections["filesystem"] == "landlock"
    assert not (shared / "pwned.txt").exists() and "Permission denied" in result.stderr


def test_unlink_through_a_dir_fd_is_refused(shared: Path) -> None:
    result = run_python(f"import os\nfd = os.open({str(shared)!r}, os.O_RDONLY)\n"
                        "os.unlink('victim.txt', dir_fd=fd)\n", FALLBACK)
    assert not result.passed
    if not _layer_missing(result, "landlock"):
        assert (shared / "victim.txt").read_text() == "keep me"


@pytest.mark.parametrize("folder", ["/dev/shm", tempfile.gettempdir()])
def test_world_writable_system_folders_are_refused(folder: str) -> None:
    target = Path(folder, f"dasd-escape-{os.getpid()}.txt")
    source = (f"import _io, posix\n_io.open({str(target)!r}, 'w').write('x')\n")
    try:
        result = run_python(source, FALLBACK)
        assert not result.passed
        if not _layer_missing(result, "landlock"):
            assert not target.exists()
        other = run_python(f"import posix\nposix.open({str(target)!r}, "
                           "posix.O_CREAT | posix.O_WRONLY)\n", FALLBACK)
        assert not other.passed
        if _landlocked(other):
            assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_tcp_through_socket_type_reaches_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        source = ("import socket\ns = socket.SocketType(socket.AF_INET, socket.SOCK_STREAM)\n"
                  f"s.connect(('127.0.0.1', {port}))\ns.sendall(b'hello')\n")
        result = run_python(source, FALLBACK)
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()
    assert not result.passed
    if not _layer_missing(result, "seccomp"):
        assert result.protections["network"] == "seccomp"
        assert "Operation not permitted" in result.stderr


def test_udp_reaches_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        result = run_python("import _socket\ns = _socket.socket(_socket.AF_INET, "
                            f"_socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {port}))\n",
                            FALLBACK)
        if not _layer_missing(result, "seccomp"):
            with pytest.raises(TimeoutError):
                listener.recv(1)
    assert not result.passed


def test_abstract_unix_socket_of_the_host_is_out_of_reach() -> None:
    name = f"\0dasd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        result = run_python(f"import socket\ns = socket.SocketType(socket.AF_UNIX)\n"
                            f"s.connect({name!r})\n", FALLBACK)
    assert not result.passed
    if "abstract sockets scoped" in result.protections["landlock"]:
        assert "Operation not permitted" in result.stderr


def test_processes_outside_the_sandbox_cannot_be_signalled() -> None:
    """A process of the program's own user (nobody when root) survives SIGKILL from it."""
    user = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    with subprocess.Popen(["sleep", "30"], **user) as victim:
        try:
            result = run_python(f"import os\nos.kill({victim.pid}, 9)\n", FALLBACK)
            time.sleep(0.1)
            if "signals" in result.protections["landlock"]:
                assert not result.passed and victim.poll() is None
        finally:
            victim.kill()


def test_proc_is_unreadable() -> None:
    result = run_python("open('/proc/self/environ', 'rb').read()\n", FALLBACK)
    assert not result.passed and "refuses to open /proc" in result.stderr
    through_fd = run_python("import os\nroot = os.open('/', os.O_PATH)\n"
                            "os.open('proc/self/environ', os.O_RDONLY, dir_fd=root)\n", FALLBACK)
    assert not through_fd.passed
    if _landlocked(through_fd):
        assert "Permission denied" in through_fd.stderr


def test_missing_kernel_layers_are_named_once(caplog: pytest.LogCaptureFixture) -> None:
    facts = {"namespaces": False, "landlock": "unavailable: Function not implemented",
             "seccomp": "unavailable: Invalid argument"}
    with caplog.at_level(logging.WARNING, logger="dasd.sandbox.supervisor"):
        for _ in range(3):
            sandbox._warn_missing_layers(facts)
    assert [r.getMessage().split(":", 3)[:3] for r in caplog.records] == [
        ["sandbox", " Landlock unavailable", " Function not implemented"],
        ["sandbox", " seccomp unavailable", " Invalid argument"]]
    assert sandbox._protections(facts) | {"landlock": "", "seccomp": ""} == {
        "network": "guard", "filesystem": "guard", "processes": "process group",
        "landlock": "", "seccomp": "", "verdict": "completion report"}


# The seccomp filter, run by a small BPF interpreter on made-up system calls.
def _bpf(program: list[tuple[int, int, int, int]], nr: int, arch: int, arg0: int = 0) -> int:
    data = {0: nr, 4: arch, 16: arg0 & 0xFFFFFFFF}
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x06:
            return k
        if code == 0x20:
            accumulator, pc = data[k], pc + 1
            continue
        taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k}[code]
        pc += 1 + (jt if taken else jf)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_decisions(machine: str) -> None:
    program = sandbox_kernel.seccomp_filter(machine)
    arch, denied, (sock, clone, clone3) = sandbox_kernel._SYSCALLS[machine]
    allow, eperm, enosys = 0x7FFF0000, 0x00050001, 0x00050026
    ptrace = denied[sandbox_kernel._DENIED_NAMES.index("ptrace")]
    cases = [(sock, socket.AF_INET, eperm), (sock, socket.AF_INET6, eperm),
             (sock, socket.AF_UNIX, allow), (clone, 0x10000000 | 17, eperm),  # NEWUSER
             (clone, 0x40000000, eperm), (clone, 0x003D0F00 | 17, allow),  # pthread flags
             (clone3, 0, enosys), (ptrace, 0, eperm), (0, 0, allow), (1, 0, allow)]
    for nr, arg0, expected in cases:
        assert _bpf(program, nr, arch, arg0) == expected, (machine, nr, arg0)
    assert all(_bpf(program, nr, arch) == eperm for nr in denied)
    assert _bpf(program, 0, 0x40000003) == 0x80000000  # another architecture: killed
    if machine == "x86_64":
        assert _bpf(program, 0x40000000 | 41, arch, socket.AF_INET) == eperm  # x32


def test_seccomp_filter_refuses_unknown_machines() -> None:
    with pytest.raises(OSError, match="not written for riscv64"):
        sandbox_kernel.seccomp_filter("riscv64")


# The interpreter.
@pytest.mark.parametrize("namespaces", [True, False])
def test_benign_programs_pass_with_the_chosen_interpreter(namespaces: bool) -> None:
    settings = replace(QUICK, namespaces=namespaces)
    result = run_python(BENIGN, settings)
    assert result.passed, result.stderr
    assert result.python == sandbox_python(settings) and os.access(result.python, os.X_OK)


def _closed_to_others(path: str) -> bool:
    parts = Path(os.path.realpath(path)).parents
    return any(not os.stat(folder).st_mode & 0o001 for folder in parts)


@pytest.mark.skipif(os.geteuid() != 0 or not _closed_to_others(sys.executable),
                    reason="needs root and an interpreter that nobody cannot read")
def test_root_fallback_avoids_an_interpreter_nobody_cannot_read() -> None:
    chosen = sandbox_python(FALLBACK)
    assert chosen != sys.executable and not _closed_to_others(chosen)
    with pytest.raises(DasdError, match="no Python interpreter works in the sandbox for "
                       "user nobody .*No module named") as error:
        sandbox_python(replace(FALLBACK, python=sys.executable))
    assert "\n" not in str(error.value)


def test_the_choice_is_made_once() -> None:
    first = sandbox_python(FALLBACK)
    start = time.monotonic()
    assert sandbox_python(replace(FALLBACK, timeout=1.0)) == first
    assert time.monotonic() - start < 0.05


AS_USER = """
import json, sys
sys.path.insert(0, {src!r})
from dataclasses import replace
from dasd.sandbox import SandboxSettings, run_python
settings = SandboxSettings(timeout=5.0)
out = {{}}
for namespaces in (True, False):
    s = replace(settings, namespaces=namespaces)
    benign = run_python({benign!r}, s)
    fake = run_python("import os\\n_real = os._exit\\nos._exit = lambda c: _real(0)\\n"
                      "assert 1 + 1 == 3\\n", s)
    out[str(namespaces)] = [benign.status, fake.status, benign.protections["filesystem"]]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv")
                    or not os.path.exists("/usr/bin/python3") or _closed_to_others(str(SRC)),
                    reason="needs root, setpriv, /usr/bin/python3 and a source tree others read")
def test_as_a_normal_user() -> None:
    """dasd itself run by a user that is not root (here nobody, with the system python)."""
    script = AS_USER.format(src=str(SRC), benign=BENIGN)
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "/usr/bin/python3", "-c", script], capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    verdicts = json.loads(done.stdout)
    assert {k: v[:2] for k, v in verdicts.items()} == {"True": ["passed", "failed"],
                                                       "False": ["passed", "failed"]}


DEGRADED = """
import ctypes, json, logging, os, sys
sys.path.insert(0, {src!r})
from dasd.sandbox import kernel
from dasd.sandbox import SandboxSettings, run_python
# A container without either: landlock_create_ruleset fails with ENOSYS and
# prctl(PR_SET_SECCOMP) with EINVAL, for this process and the sandboxes it starts.
arch = kernel._SYSCALLS[os.uname().machine][0]
prctl = {{"x86_64": 157, "aarch64": 167}}[os.uname().machine]
allow, fail = 0x7FFF0000, 0x00050000
program = [(0x20, 0, 0, 4), (0x15, 1, 0, arch), (0x06, 0, 0, allow), (0x20, 0, 0, 0),
           (0x15, 0, 1, 444), (0x06, 0, 0, fail | 38), (0x15, 0, 3, prctl),
           (0x20, 0, 0, 16), (0x15, 0, 1, 22), (0x06, 0, 0, fail | 22), (0x06, 0, 0, allow)]
code = b"".join(kernel.struct.pack("HBBI", *op) for op in program)
buffer = ctypes.create_string_buffer(code, len(code))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
fprog = kernel._SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
assert libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(fprog),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
settings = SandboxSettings(namespaces=False, timeout=5.0)
benign = run_python({benign!r}, settings)
fake = run_python("import os\\n_real = os._exit\\nos._exit = lambda c: _real(0)\\n"
                  "assert 1 + 1 == 3\\n", settings)
print(json.dumps([benign.status, fake.status, benign.protections]))
"""


def test_without_landlock_and_seccomp_the_fallback_degrades_and_says_so() -> None:
    """As in a container whose profile lacks both: programs still run and are judged, the
    results say "unavailable" and one warning per layer names it."""
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("the simulated container filter is written for x86_64 and aarch64")
    script = DEGRADED.format(src=str(SRC), benign=BENIGN)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    benign, fake, protections = json.loads(done.stdout)
    assert (benign, fake) == ("passed", "failed")
    assert protections["landlock"] == "unavailable: Function not implemented"
    assert protections["seccomp"] == "unavailable: Invalid argument"
    assert (protections["filesystem"], protections["network"]) == ("guard", "guard")
    warnings = [line for line in done.stderr.splitlines() if "unavailable" in line]
    assert len(warnings) == 2, done.stderr
