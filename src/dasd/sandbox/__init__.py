"""Running model-written code: `supervisor` starts and watches the sandboxed program,
`child` walls it in (privilege drop, namespaces, resource limits), `kernel` adds the
Landlock and seccomp filters. Below the tasks that check answers by running code."""

from dasd.sandbox.supervisor import SandboxResult, SandboxSettings, run_python, sandbox_python

__all__ = ["SandboxResult", "SandboxSettings", "run_python", "sandbox_python"]
