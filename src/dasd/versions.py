"""The versions of the libraries a result depends on, for `dasd --version` and config.yaml.

dasd overrides private parts of TRL and transformers (the SFT loss internals, SDFTTrainer
hooks, cache layers), so a result is only reproducible with the versions it was made with.
Read from the installed packages' metadata: nothing is imported.
"""

from __future__ import annotations

from importlib import metadata

from dasd import __version__

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "vllm",
             "math-verify")


def library_versions() -> dict[str, str]:
    """{package: version} of the libraries above that are installed (vllm is optional)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def version_text() -> str:
    """`dasd --version`: dasd's version, then one line per library."""
    lines = [f"dasd {__version__}"]
    lines += [f"  {name} {version}" for name, version in library_versions().items()]
    return "\n".join(lines)
