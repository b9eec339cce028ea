"""Upload an export folder to the Hugging Face Hub: the one place dasd goes online, and
only when asked (`dasd export --push-to-hub REPO`).

Offline (`HF_HUB_OFFLINE`), without a token, or when the upload fails, it stops with one
line saying why, that the folder itself is complete, and how to push it later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dasd.errors import DasdError


def hub_offline() -> bool:
    """Whether the Hub is switched off here (the environment variable, read now, or
    huggingface_hub's own setting)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def hub_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()


def push_folder(folder: str | Path, repo: str, repo_type: str, private: bool = False) -> str:
    """Create `repo` (a dataset or model repo) if needed and upload `folder` into it;
    return the repo's URL."""
    later = (f"the export in {folder} is complete: push it from a machine that is online "
             f"(`hf upload {repo} {folder} . --repo-type {repo_type}`)")
    if hub_offline():
        raise DasdError(f"--push-to-hub {repo}: the Hub is switched off here "
                        f"(HF_HUB_OFFLINE); {later}")
    from huggingface_hub import get_token

    if get_token() is None:
        raise DasdError(f"--push-to-hub {repo}: not logged in to the Hub (run `hf auth login` "
                        f"or set HF_TOKEN); {later}")
    api = hub_api()
    try:
        api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type=repo_type,
                          commit_message="Upload with dasd export")
    except Exception as err:  # network, auth and HTTP errors come in many classes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DasdError(f"--push-to-hub {repo}: the upload failed ({first[:200]}); "
                        f"{later}") from err
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo}"
