"""A pass means every assert ran: programs that try to fake one are not scored passed.

Each program ends with (or contains) a failing assert and tries to make the run look
successful anyway: exit status 0, hooks, closed streams, or a forged completion report
(scanning every fd, with any token it can find in frames, module globals, a signal
handler's frame, gc or raw memory). Every case runs with namespaces and forced onto the
fallback, as in test_sandbox.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dasd.sandbox import SandboxSettings, run_python
from dasd.sandbox.supervisor import _read_info

QUICK = SandboxSettings(timeout=5.0, cpu_seconds=4, memory_mb=256, max_processes=16,
                        max_file_mb=1, max_output_bytes=4096)
FAILING = "assert 1 + 1 == 3\n"
# Writes {"done": token} for every candidate token (or a made-up one) to every fd, then
# exits 0: what a program that found the report's channel and token would do.
FORGE = '''
import json, os, re, sys

def tokens_in(values, depth=0, found=None):
    found = set() if found is None else found
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str):
            found.update(re.findall(r"[0-9a-f]{32}", value))
        elif depth < 3 and isinstance(value, dict):
            tokens_in(list(value.values()), depth + 1, found)
        elif depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
            tokens_in(list(value), depth + 1, found)
        elif depth < 3 and hasattr(value, "__dict__") and not isinstance(value, type):
            tokens_in(list(vars(value).values()), depth + 1, found)
    return found

def frame_values(frame):
    values = []
    while frame is not None:
        values += list(frame.f_locals.values()) + list(frame.f_globals.values())
        frame = frame.f_back
    return values

def forge(tokens):
    for fd in range(3, 1024):
        for token in sorted(tokens) or ["0" * 32]:
            try:
                os.write(fd, (json.dumps({"done": token}) + "\\n").encode())
            except OSError:
                break
    os._exit(0)
'''
ATTEMPTS = {
    "os._exit patched to exit 0": "import os\n_real = os._exit\n"
                                  "os._exit = lambda code: _real(0)\n" + FAILING,
    "sys.excepthook replaced": "import sys\nsys.excepthook = lambda *args: None\n" + FAILING,
    "atexit handler exits 0": "import atexit, os\natexit.register(os._exit, 0)\n" + FAILING,
    "os.kill(own pid, 0)": "import os\nos.kill(os.getpid(), 0)\n" + FAILING,
    "stdout and stderr closed": "import os, sys\nsys.stdout.close()\nsys.stderr.close()\n"
                                "os.close(1)\nos.close(2)\n" + FAILING,
    "os._exit(0) after the failed assert": "import os\ntry:\n    " + FAILING
                                           + "except AssertionError:\n    os._exit(0)\n",
    "os._exit(0) before the asserts": "import os\nos._exit(0)\n" + FAILING,
    "StopIteration ending the chain early": "raise StopIteration\n" + FAILING,
    "a thread exits 0 first": "import os, threading, time\nthreading.Thread(target=lambda: "
                              "os._exit(0)).start()\ntime.sleep(0.5)\n" + FAILING,
    "re-exec into a fresh python": "import os, sys\nos.execv(sys.executable, "
                                   "[sys.executable, '-c', 'pass'])\n" + FAILING,
    "report forged on every fd": FORGE + "forge(set())\n" + FAILING,
    "token from frames and modules": FORGE + "forge(tokens_in(frame_values(sys._getframe()) + "
                                     "[vars(m) for m in list(sys.modules.values())]))\n"
                                     + FAILING,
    "token from a signal handler's frame": FORGE + "import signal\nsignal.signal("
                                           "signal.SIGUSR1, lambda n, frame: "
                                           "forge(tokens_in(frame_values(frame))))\n"
                                           "signal.raise_signal(signal.SIGUSR1)\n" + FAILING,
    "token from gc": FORGE + "import gc\nforge(tokens_in(gc.get_objects()))\n" + FAILING,
    "gc referrers of the exec'd namespace": "import gc\ngc.get_referrers(globals())\n"
                                            + FAILING,
    "raw memory through ctypes": "import ctypes\nctypes.string_at(id(0), 64)\n" + FAILING,
    "raw memory through /proc/self/mem": "open('/proc/self/mem', 'rb')\n" + FAILING,
    "/proc/self/mem through a dir fd": "import os\nroot = os.open('/', os.O_PATH)\n"
                                       "os.open('proc/self/mem', os.O_RDONLY, dir_fd=root)\n"
                                       + FAILING,
    "trace function jumping past the asserts": (
        "import sys\ndef jump(frame, event, arg):\n"
        "    if event == 'line' and frame.f_lineno == 7:\n        frame.f_lineno = 8\n"
        "    return jump\nsys.settrace(jump); sys._getframe().f_trace = jump\n"
        + FAILING + "x = 1\n"),
    "hand-made code object": "code = (lambda: None).__code__.replace(co_consts=())\n"
                             + FAILING,
    "bytecode through marshal": "import marshal\nmarshal.loads(marshal.dumps((lambda: 0)"
                                ".__code__))\n" + FAILING,
    "bytecode from a .pyc it wrote": "import os, py_compile, sys\nopen('m.py', 'w').write('x = 1')"
                                     "\npy_compile.compile('m.py', cfile='m.pyc')\n"
                                     "os.remove('m.py')\nsys.path.insert(0, os.getcwd())\n"
                                     "import m\n" + FAILING,
    "native code from an extension module it wrote": (
        "import glob, importlib.util, os, shutil, sys\n"
        "found = sorted(f for p in sys.path for f in glob.glob(os.path.join(p, '*.so')))\n"
        "shutil.copy(found[0], 'ext.so')\nname = os.path.basename(found[0]).split('.')[0]\n"
        "spec = importlib.util.spec_from_file_location(name, os.path.abspath('ext.so'))\n"
        "importlib.util.module_from_spec(spec)\n" + FAILING),
}


@pytest.fixture(params=["namespaces", "fallback"])
def limits(request: pytest.FixtureRequest) -> SandboxSettings:
    return replace(QUICK, namespaces=request.param == "namespaces")


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_fake_pass_is_not_a_pass(limits: SandboxSettings, name: str) -> None:
    result = run_python(ATTEMPTS[name], limits)
    assert not result.passed, (name, result)
    assert result.status in ("failed", "error"), (name, result.status, result.stderr)


def test_the_same_program_with_a_true_assert_passes(limits: SandboxSettings) -> None:
    """The harness of the forged reports runs fine: only the forgery fails."""
    result = run_python(FORGE + "assert 1 + 1 == 2\nprint('ok')\n", limits)
    assert (result.passed, result.stdout) == (True, "ok\n"), result.stderr


def test_exit_zero_without_the_report_says_why(limits: SandboxSettings) -> None:
    result = run_python(ATTEMPTS["os._exit(0) before the asserts"], limits)
    assert (result.status, result.exit_code) == ("error", 0)
    assert "ended before its tests finished" in result.stderr


def test_refused_introspection_names_itself(limits: SandboxSettings) -> None:
    result = run_python("import gc\ngc.get_objects()\n", limits)
    assert result.status == "error" and "sandbox refuses gc.get_objects" in result.stderr


def test_common_introspection_still_works(limits: SandboxSettings) -> None:
    """namedtuple, enum, warnings, doctest and tracebacks use frames; they keep working."""
    source = ("import collections, doctest, enum, io, sys, traceback, warnings\n"
              "P = collections.namedtuple('P', 'x y')\nC = enum.Enum('C', 'A B')\n"
              "warnings.warn('w')\ndoctest.testmod()\n"
              "try:\n    1 / 0\nexcept ZeroDivisionError:\n    s = io.StringIO()\n"
              "    traceback.print_exc(file=s)\n    assert 'ZeroDivisionError' in s.getvalue()\n"
              "assert P(1, 2).y == 2 and C.B.value == 2 and sys._getframe().f_back\n")
    result = run_python(source, limits)
    assert result.passed, result.stderr


def _info(*lines: dict | str) -> bytes:
    return "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines).encode()


TOKEN = "ab" * 16


@pytest.mark.parametrize(("info", "completed"), [
    (_info({"namespaces": False}, {"seccomp": "on", "token": TOKEN}, {"done": TOKEN}), True),
    (_info({"token": TOKEN}, "garbage", {"done": "cd" * 16}, {"done": TOKEN}), True),
    (_info({"token": TOKEN}, {"done": "cd" * 16}), False),  # a guessed token
    (_info({"done": TOKEN}, {"token": TOKEN}), False),  # a report before the announcement
    (_info({"token": TOKEN}, {"token": "cd" * 16}, {"done": "cd" * 16}), False),  # re-announced
    (_info({"token": "short"}, {"done": "short"}), False),
    (_info({"namespaces": True}), False),
    (b"", False),
])
def test_completion_report_parsing(info: bytes, completed: bool) -> None:
    facts, done = _read_info(info)
    assert done is completed and "token" not in facts
