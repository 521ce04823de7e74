"""Uploading an exported folder to the Hugging Face Hub (``huggingface_hub``), which finds
the token itself (``HF_TOKEN``, or the one ``hf auth login`` saved)."""

from __future__ import annotations

from pathlib import Path

from winnow.errors import WinnowError


def push(folder: Path, repo: str, *, repo_type: str, private: bool) -> str:
    """Create ``repo`` if it does not exist (private if asked), upload ``folder`` to it as
    one commit, and return the repository's URL.

    Any failure (no token, no network, a refusal) is one line; the folder stays written,
    and the line says how to upload it by hand.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=folder, repo_id=repo, repo_type=repo_type, commit_message="winnow export")
    except Exception as e:  # noqa: BLE001 - the Hub client raises HTTP, network and auth errors alike
        raise WinnowError(
            f"--push-to-hub {repo}: {type(e).__name__}: {e}; {folder} is written: upload it later with "
            f"`hf upload {repo} {folder} --repo-type {repo_type}`"
        ) from None
    return str(url)
