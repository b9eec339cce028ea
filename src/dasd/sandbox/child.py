"""The child side of the code sandbox; `sandbox.run_python` starts it, never import it.

Run as `python -I -B -u child.py SETTINGS_JSON` with the work folder as cwd and
`program.py` in it. It uses only the standard library (and `kernel.py` beside it,
loaded by path), so it starts fast and sees no dasd code. The layers, in order (each
one's outcome is reported on the info pipe):

1. Namespaces (Linux): new mount, network and PID namespaces (plus a user namespace when
   not root). The launcher forks a trusted init (PID 1 of the new namespace) that dies
   with the launcher (PR_SET_PDEATHSIG), and when PID 1 dies the kernel kills every
   process of the namespace, so nothing the program forks or daemonises outlives a run.
2. Filesystem: every mount is made read-only (mount_setattr, recursive) and the work
   folder becomes a fresh size-capped tmpfs seen only inside the namespace.
3. The program process: rlimits (CPU, address space, processes, file size, open files,
   no core dumps), then root drops to `nobody` (RLIMIT_NPROC does not bind root) and all
   capabilities are dropped, with no_new_privs.
4. Fallback guards when a namespace could not be made: Python-level refusal of sockets
   and of writes outside the work folder. These are a seat belt, not a wall: ctypes or
   `_io` get around them; layer 5 is the wall.
5. Kernel filters, in both modes (`kernel.py`): Landlock (writes only in the work
   folder, no /proc, no TCP, no signals out) and seccomp (no sockets but AF_UNIX, no
   ptrace, mounts or namespaces), where the kernel has them.
6. The verdict: the program runs as the first call of a chain whose next call writes a
   completion report with a per-run token on the info pipe (`_steps`); an audit hook
   refuses the ways Python code could reach that token or skip the asserts. A run
   passes only with that report, whatever its exit status.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import ctypes
import functools
import importlib.util
import io
import json
import operator
import os
import posix
import resource
import signal
import struct
import sys
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 0x4000, 1 << 18
MNT_DETACH, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE, AT_FDCWD = 2, 1, 2, 0x8000, -100
SYS_MOUNT_SETATTR, PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 442, 1, 38, 4
NOBODY = 65534
# Exit codes naming why a run failed (sandbox.py `_STATUS_BY_CODE`); 0 alone is no pass.
PASSED, ASSERTION, ERROR, MEMORY, EARLY_EXIT = 0, 1, 2, 3, 4
# Audit events refused once the program starts (see `_fence_introspection`).
_REFUSED_EVENTS = frozenset({
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
    "marshal.load", "sys.settrace", "sys.setprofile",
    "sys.monitoring.register_callback", "sys._current_frames", "sys.remote_exec",
    "sqlite3.enable_load_extension", "sqlite3.load_extension"})
_REFUSED_MODULES = frozenset({"_tkinter", "_testcapi", "_testinternalcapi", "_testbuffer",
                              "_testmultiphase", "_testsinglephase", "_testimportmultiple"})


def _load_kernel():
    spec = importlib.util.spec_from_file_location(
        "dasd_sandbox_kernel", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "kernel.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kernel = _load_kernel()
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def _unshare(root: bool) -> bool:
    """New mount/net/PID namespaces (and a user namespace unless root); False if refused."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        return False
    if not root:  # identity map: our files stay ours, the kernel still counts our real uid
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    return True


def _closed_ancestor(path: str) -> str | None:
    """The highest ancestor of `path` that others may not search (e.g. /root, mode 0700)."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _expose_python(workdir: str) -> None:
    """Let `nobody` import the standard library when it lives under a closed folder.

    The closed folder (e.g. /root with pyenv inside) is covered, in this mount namespace
    only, by an empty tmpfs into which just the import paths are bind-mounted back.
    """
    paths = sorted({os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)})
    paths = [p for p in paths if not any(p.startswith(q + "/") for q in paths if q != p)]
    by_ancestor: dict[str, list[str]] = {}
    for path in paths:
        ancestor = _closed_ancestor(path)
        if ancestor is not None:
            by_ancestor.setdefault(ancestor, []).append(path)
    for ancestor, inner in by_ancestor.items():
        stages = []
        for i, path in enumerate(inner):
            stage = os.path.join(workdir, f".stage{len(stages)}-{i}")
            os.mkdir(stage)
            _mount(path, stage, None, MS_BIND | MS_REC)
            stages.append(stage)
        _mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for path, stage in zip(inner, stages, strict=True):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(stage, path, None, MS_BIND | MS_REC)
            _check(_libc.umount2(stage.encode(), MNT_DETACH), f"umount {stage}")


def _isolate_fs(settings: dict, source: bytes, uid: int, gid: int) -> bool:
    """Read-only view of every mount, a private tmpfs as the work folder; False on failure."""
    workdir = settings["workdir"]
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
        if uid != os.getuid():
            _expose_python(workdir)
        attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_RDONLY
                                                       | MOUNT_ATTR_NOSUID, 0, 0, 0))
        _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                             ctypes.c_uint(AT_RECURSIVE), attr, ctypes.c_size_t(32)),
               "mount_setattr /")
        _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={settings['max_file_mb']}m,mode=0700,uid={uid},gid={gid}")
    except OSError as error:
        print(f"sandbox: filesystem isolation failed ({error})", file=sys.stderr)
        return False
    os.chdir(workdir)  # the cwd still pointed at the folder under the new tmpfs
    with open("program.py", "wb") as handle:
        handle.write(source)
    os.chown("program.py", uid, gid)
    with contextlib.suppress(OSError):  # a /proc showing only the namespace's processes
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return True


def _wait_for(pid: int) -> int:
    """Reap children (PID 1 inherits orphans) until `pid` ends; its status as an exit code."""
    while True:
        done, status = os.wait()
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _set_limits(settings: dict) -> None:
    cpu, mb = settings["cpu_seconds"], 1024 * 1024
    limits = ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
              (resource.RLIMIT_AS, (settings["memory_mb"] * mb,) * 2),
              (resource.RLIMIT_NPROC, (settings["max_processes"],) * 2),
              (resource.RLIMIT_FSIZE, (settings["max_file_mb"] * mb,) * 2),
              (resource.RLIMIT_NOFILE, (settings["max_open_files"],) * 2),
              (resource.RLIMIT_CORE, (0, 0)))
    for which, value in limits:
        resource.setrlimit(which, value)


def _drop_privileges(uid: int, gid: int) -> None:
    """Become `uid`/`gid` with no capabilities; no later exec can gain any."""
    if os.getuid() != uid:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(_libc.capset(header, bytes(24)), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # setuid cleared it; /proc/self needs it


def _refuse(*_args, **_kwargs):
    raise PermissionError("network access is disabled in the sandbox")


def _guard_network() -> None:
    import _socket
    import socket

    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server"):
        setattr(socket, name, _refuse)
    _socket.socket = _refuse


def _guard_writes(workdir: str) -> None:
    """Refuse opening for writing, creating or deleting paths outside `workdir`."""
    root = os.path.realpath(workdir)

    def inside(path) -> bool:
        full = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else root)
        return full == root or full.startswith(root + os.sep)

    def deny(path):
        raise PermissionError(f"the sandbox may only write inside its folder, not {path!r}")

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not inside(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if flags & writes and not inside(path):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open
    for name in ("remove", "unlink", "rmdir", "mkdir", "rename", "replace", "chmod", "symlink",
                 "link", "truncate"):
        real = getattr(os, name)
        setattr(os, name, _checked(real, inside, deny))


def _checked(real, inside, deny):
    """`real` (an os function), refusing when any path argument lies outside the folder."""
    def wrapper(*args, **kwargs):
        for arg in args:
            if isinstance(arg, str | bytes | os.PathLike) and not inside(arg):
                deny(arg)
        return real(*args, **kwargs)
    return wrapper


def _print_traceback() -> None:
    """The current exception's traceback from the program's frames on (ours left out)."""
    kind, error, trace = sys.exc_info()
    traceback.print_exception(kind, error, trace.tb_next if trace else None)


def _apply(layer, *args) -> str:
    """Run one kernel layer; its description, or why the kernel refused it."""
    try:
        return layer(*args)
    except OSError as error:
        return f"unavailable: {error.strerror or error}"


def _fence_introspection() -> None:
    """Refuse, from here on, the ways plain Python could find the completion report or
    skip the asserts (see `_steps`): object walks (gc), raw memory (ctypes; /proc/self/mem
    as well, a best-effort check where Landlock is missing), native code or bytecode the
    program made (extension modules and bytecode caches from outside the interpreter's
    own folders, code objects, sqlite extensions, Tcl's `load`), and trace or profile
    functions (a trace function can jump past the asserts).

    An audit hook cannot be removed, and this one is reachable from no Python object and
    reads no global, so the program cannot change what it refuses.
    """
    sys.addaudithook(_audit_hook(tuple(
        os.path.realpath(p) + os.sep for p in sys.path if p and os.path.isdir(p))))
    real_settrace, real_setprofile = sys.settrace, sys.setprofile
    # Clearing a trace function that was never set is harmless (doctest does it).
    sys.settrace = lambda function: None if function is None else real_settrace(function)
    sys.setprofile = lambda function: None if function is None else real_setprofile(function)


def _audit_hook(trusted: tuple[str, ...]):
    """The hook of `_fence_introspection`; `trusted`: the interpreter's folders (not
    writable by the program), whose extension modules and .pyc files may load.

    marshal.loads may only load the content of a .pyc just opened in those folders (the
    import system's way): the hook reads the file again and compares.
    """
    recent_pycs: list[str] = []

    def hook(event, args, refused=_REFUSED_EVENTS, modules=_REFUSED_MODULES,
             trusted=trusted, recent=recent_pycs, error=PermissionError, is_a=isinstance,
             exact=str.__str__, decode=os.fsdecode, realpath=os.path.realpath,
             read=_read_file):
        if event in refused or event[:7] == "ctypes.":
            raise error(f"the sandbox refuses {event}")
        if event == "open" and is_a(args[0], (str, bytes)):
            path = realpath(decode(args[0]))
            if path == "/proc" or path[:6] == "/proc/":
                raise error(f"the sandbox refuses to open {path}")
            if path[-4:] == ".pyc" and path.startswith(trusted):
                recent[:] = [path, *recent[:7]]
        elif event == "marshal.loads":
            if not any(read(path)[16:] == args[0] for path in recent):
                raise error("the sandbox refuses marshal.loads of bytes it did not read")
        elif event == "import" and is_a(args[0], str) and exact(args[0]) in modules:
            raise error(f"the sandbox refuses to import {args[0]}")
        elif event == "import" and is_a(args[1], (str, bytes)):  # an extension module
            path = realpath(decode(args[1]))
            if not path.startswith(trusted):
                raise error(f"the sandbox refuses to load {path}")

    return hook


def _read_file(path: str, open_=posix.open, read=posix.read, close=posix.close,
               flags=posix.O_RDONLY) -> bytes:
    """The bytes of `path`, or b"" (C functions bound at import: the program cannot swap
    them; the Python write guard wraps os.open, not posix.open)."""
    try:
        fd = open_(path, flags)
    except OSError:
        return b""
    try:
        chunks = []
        while chunk := read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        close(fd)


def _steps(code, info_fd: int, facts: dict):
    """The run as a chain of C calls: the program (with its asserts), the completion
    report, exit(0). Writes the facts and a fresh token on the info pipe first.

    Nothing of the chain is reachable from Python: it lives on the value stack of the
    caller's frame (which no Python API reads) once this frame is gone, and the report's
    bytes are only inside it. So the report is written only if `exec` returned normally,
    i.e. every assert ran, and the program cannot write it itself: it does not know the
    token, whatever fd it scans. Exiting early, in any way, leaves the report unwritten.
    """
    token = os.urandom(16).hex()
    os.write(info_fd, (json.dumps({**facts, "token": token}) + "\n").encode())
    report = (json.dumps({"done": token}) + "\n").encode()
    calls = [functools.partial(exec, code, {"__name__": "__main__"}),
             functools.partial(os.write, info_fd, report), functools.partial(os._exit, PASSED)]
    return map(operator.methodcaller("__call__"), calls)


def _run_program(settings: dict, source: bytes, namespaces: bool, filesystem: bool) -> None:
    """Apply limits, guards, the privilege drop and the kernel filters, then run program.py
    (see `_steps`); never returns. A failed run ends here with the exit code of its cause
    (the host only uses it to name the failure: only the report makes a pass)."""
    _set_limits(settings)
    if not namespaces:
        _guard_network()
    if not filesystem:
        _guard_writes(settings["workdir"])
    _drop_privileges(*settings["run_ids"])
    facts = {"landlock": _apply(kernel.landlock, settings["workdir"]),
             "seccomp": _apply(kernel.seccomp)}
    leave, code = os._exit, ERROR
    try:
        program = compile(source.decode("utf-8", "surrogateescape"), "program.py", "exec",
                          dont_inherit=True, optimize=0)  # text: no coding cookie applies
        _fence_introspection()
        collections.deque(_steps(program, settings["info_fd"], facts), maxlen=0)
        # Only a StopIteration the program raised ends the chain early without an error.
        os.write(2, b"sandbox: the program raised StopIteration before its tests finished\n")
    except AssertionError:
        code = ASSERTION
        _quietly(_print_traceback)
    except MemoryError:
        code = MEMORY
        os.write(2, b"MemoryError: the program exceeded the sandbox memory limit\n")
    except SystemExit:
        code = EARLY_EXIT
        os.write(2, b"sandbox: the program called exit() before its tests finished\n")
    except BaseException:  # the program's own failure: report it, never raise
        _quietly(_print_traceback)
    leave(code)


def _quietly(function) -> None:
    """Call `function`, ignoring its failure (the program may have broken sys.stderr)."""
    with contextlib.suppress(BaseException):
        function()


def _report(info_fd: int, facts: dict) -> None:
    os.write(info_fd, (json.dumps(facts) + "\n").encode())


def main(settings: dict) -> None:
    root = os.geteuid() == 0
    info_fd = settings["info_fd"]
    with open("program.py", "rb") as handle:
        source = handle.read()
    run_ids = (NOBODY, NOBODY) if root else (os.getuid(), os.getgid())
    settings["run_ids"] = run_ids
    if not (settings["namespaces"] and _unshare(root)):
        _report(info_fd, {"namespaces": False, "filesystem": False})
        _run_program(settings, source, namespaces=False, filesystem=False)
    init = os.fork()
    if init:  # the launcher: outside the namespace, only waits
        os.close(info_fd)
        os._exit(_wait_for(init))
    # Dies with the launcher, and the namespace with it. (getppid() is 0 here, the parent
    # being outside the namespace, so a launcher killed before this line goes unnoticed
    # until the program ends; the host's wall-clock kill still ends the launcher.)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    isolated = _isolate_fs(settings, source, *run_ids)
    _report(info_fd, {"namespaces": True, "filesystem": isolated})
    program = os.fork()
    if program == 0:  # keeps the info pipe: its completion report goes there
        _run_program(settings, source, namespaces=True, filesystem=isolated)
    os.close(info_fd)
    os._exit(_wait_for(program))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
