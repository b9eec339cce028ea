"""Kernel walls around the sandboxed program that need no namespaces: Landlock and seccomp.

`child.py` loads this file by path and applies both to the program's process just
before the program starts (after the privilege drop, with no_new_privs set); they bind
every process the program starts too, and cannot be lifted. It uses only the standard
library (ctypes for the system calls), because the child may run under an interpreter
that has none of dasd's dependencies (the system `python3` for `nobody`). Never call these
functions in a process you want to keep: they restrict it for good.

- `landlock(workdir)`: reads anywhere but /proc (no /proc/self/mem, no other process's
  environment), writes, creations and deletions only in the work folder (and writes to
  /dev/null); with Landlock ABI >= 4 no TCP bind or connect; with ABI >= 6 no signals to
  processes outside the sandbox and no abstract Unix sockets outside it.
- `seccomp()`: refuses sockets other than AF_UNIX, and the calls that reach other
  processes or the kernel's configuration (ptrace, process_vm_*, mount and the new mount
  API, unshare/setns and clone with namespace flags, bpf, io_uring, module loading, ...).

Each returns a one-line description of what it applied, or raises OSError saying why the
kernel refused (too old, not enabled, blocked by a container's seccomp profile).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)

# Landlock (linux/landlock.h). The system call numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH = 1, 1
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3
_FS_ABI1 = (1 << 13) - 1  # EXECUTE ... MAKE_SYM
_READ = EXECUTE | READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE  # the rights a non-folder can take
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2  # ABI 6

# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h).
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (low word of args[0])
_AF_UNIX = 1
_CLONE_NEW = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
              | 0x40000000)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
_X32_BIT = 0x40000000
# Refused calls (EPERM), then socket, clone and clone3 (checked apart), per architecture.
_DENIED_NAMES = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "mount",
    "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl",
    "add_key", "request_key", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "open_by_handle_at",
    "name_to_handle_at", "fanotify_init")
_SYSCALLS = {  # name order of _DENIED_NAMES, then socket, clone, clone3
    "x86_64": (0xC000003E, (101, 310, 311, 438, 312, 165, 166, 155, 161, 272, 308, 430, 431,
                            432, 433, 429, 428, 442, 321, 298, 323, 425, 426, 427, 250, 248,
                            249, 246, 320, 175, 313, 176, 169, 167, 168, 163, 179, 304, 303,
                            300), (41, 56, 435)),
    "aarch64": (0xC00000B7, (117, 270, 271, 438, 272, 40, 39, 41, 51, 97, 268, 430, 431, 432,
                             433, 429, 428, 442, 280, 241, 282, 425, 426, 427, 219, 217, 218,
                             104, 294, 105, 273, 106, 142, 224, 225, 89, 60, 265, 264, 262),
                (198, 220, 435)),
}


def _syscall(number: int, *args) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; OSError where Landlock is missing or refused."""
    return _syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                    ctypes.c_uint32(_CREATE_RULESET_VERSION))


def landlock(workdir: str) -> str:
    """Restrict this process (and its future children) as the module docstring says."""
    abi = landlock_abi()
    handled_fs = _FS_ABI1 | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    handled_net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("QQQ", handled_fs, handled_net, scoped)[:8 if abi < 4 else
                                                               16 if abi < 6 else 24]
    ruleset = _syscall(_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    try:
        for entry in os.scandir("/"):
            if entry.name != "proc":
                _allow(ruleset, entry.path, _READ)
        _allow(ruleset, workdir, handled_fs)
        _allow(ruleset, "/dev/null", WRITE_FILE | READ_FILE | (handled_fs & TRUNCATE))
        _syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return (f"abi {abi}: writes only in the work folder, no /proc"
            + (", no tcp" if handled_net else "")
            + (", signals and abstract sockets scoped" if scoped else ""))


def _allow(ruleset: int, path: str, access: int) -> None:
    """Grant `access` beneath `path` (a file gets only the rights a file can have)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:  # a dangling link or a vanished entry: nothing to grant
        return
    try:
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        rule = struct.pack("<Qi", access, fd)  # struct landlock_path_beneath_attr (packed)
        _syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), rule,
                 ctypes.c_uint32(0))
    finally:
        os.close(fd)


def seccomp_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k) for `machine` (os.uname().machine)."""
    if machine not in _SYSCALLS:
        raise OSError(errno.ENOSYS, f"seccomp filter not written for {machine}")
    arch, denied, (socket, clone, clone3) = _SYSCALLS[machine]
    deny = (_RET, 0, 0, _RET_ERRNO | errno.EPERM)
    program = [(_LD_W_ABS, 0, 0, _ARCH), (_JEQ, 1, 0, arch), (_RET, 0, 0, _RET_KILL_PROCESS),
               (_LD_W_ABS, 0, 0, _NR)]
    if machine == "x86_64":  # the x32 ABI's numbers, which this filter does not list
        program += [(_JGE, 0, 1, _X32_BIT), deny]
    for number in denied:
        program += [(_JEQ, 0, 1, number), deny]
    program += [(_JEQ, 0, 1, clone3), (_RET, 0, 0, _RET_ERRNO | errno.ENOSYS),  # libc: clone
                (_JEQ, 0, 4, socket), (_LD_W_ABS, 0, 0, _ARG0), (_JEQ, 0, 1, _AF_UNIX),
                (_RET, 0, 0, _RET_ALLOW), deny,
                (_JEQ, 0, 4, clone), (_LD_W_ABS, 0, 0, _ARG0), (_JSET, 0, 1, _CLONE_NEW),
                deny, (_RET, 0, 0, _RET_ALLOW),
                (_RET, 0, 0, _RET_ALLOW)]
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp() -> str:
    """Install the filter of `seccomp_filter` on this process (no_new_privs must be set)."""
    program = seccomp_filter(os.uname().machine)
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                   ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return "on: only AF_UNIX sockets; no ptrace, mounts, namespaces, bpf, io_uring"
