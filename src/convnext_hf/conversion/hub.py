"""Publishing a converted folder as a Hugging Face Hub model repository."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from ..errors import UserInputError


class HubPushError(UserInputError, RuntimeError):
    """The upload failed; the local output is complete and can be uploaded later."""


def failure_hint(error: Exception) -> str:
    """Why a call to the Hub failed, in words: the token refused, the Hub unreachable, or else the upload."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status in (401, 403):
        return "the Hub refused the token: log in with `hf auth login` or set HF_TOKEN to a token with write access"
    # huggingface_hub raises its HTTP client's TransportError (connection refused, DNS, timeouts) or, offline, a
    # ConnectionError; the client library is named by neither, so its class hierarchy is read instead.
    if isinstance(error, ConnectionError) or any(cls.__name__ == "TransportError" for cls in type(error).__mro__):
        return "the Hub could not be reached (no network, or HF_HUB_OFFLINE is set)"
    return "the upload failed"


def push_folder(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns the repository URL.

    The token comes from the standard places (HF_TOKEN, the `hf auth login` token file) unless given; the endpoint from
    HF_ENDPOINT.
    """
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=folder,
            commit_message="Upload ConvNeXt converted with convnext_hf",
        )
    except Exception as error:  # whatever failed, the user must learn that the local output is complete
        raise HubPushError(
            f"The converted model is complete in {folder}, but pushing it to {repo_id} failed: {failure_hint(error)} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Once that is fixed, "
            f"upload it with `hf upload {repo_id} {folder} .`"
        ) from error
    return str(url)
