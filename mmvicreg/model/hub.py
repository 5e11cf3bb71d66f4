"""Sharing exports through the Hugging Face Hub: the same folder as on disk, through ``huggingface_hub``'s API.

A Hub repo of an mmvicreg model holds exactly an export (:mod:`mmvicreg.model.io`): ``config.json``,
``model.safetensors``, ``tokenizers/<branch>/`` and ``README.md``; a download fetches those and, under
``tokenizers/``, data files only (``SAVED_FILE_KINDS``: never Python, never a pickle). :func:`resolve_export` turns
what ``from_pretrained`` was given into a local folder (an existing folder as is; an ``org/name`` repo id through
``snapshot_download``, which reads the Hugging Face cache first and works offline once the repo is cached);
:func:`upload_export` sends an export folder (``create_repo`` + ``upload_folder``). The network is reached
only for a Hub repo id; every failure there is one line (an ``OSError``) naming the repo, the cause and what to
do instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from mmvicreg.encoders.text_tokenizers import SAVED_FILE_KINDS
from mmvicreg.model.card import card_for_repo, model_card
from mmvicreg.model.export_files import CARD_FILE, CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE
from mmvicreg.model.io import read_export_config

# What a download fetches: the export's files, its tokenizers' data files only (never .py, never a pickle).
EXPORT_PATTERNS = [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, *(f"{TOKENIZER_DIR}/*{kind}" for kind in SAVED_FILE_KINDS)]
LOGIN_HINT = "log in with `hf auth login` or pass a token (token= / --token)"
LOCAL_HINT = "a local folder written by save_pretrained works without the Hub"


def is_repo_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub model repo id ``org/name`` (one slash, ``huggingface_hub``'s rules)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_export(name_or_path: str | os.PathLike, **hub_options: Any) -> Path:
    """The local folder of ``name_or_path``: an existing folder, or a Hub repo id fetched by :func:`download_export`.

    Anything else raises ``FileNotFoundError`` naming it. ``hub_options`` (``revision``, ``cache_dir``,
    ``token``, ``local_files_only``) are used for a Hub repo id only.
    """
    if isinstance(name_or_path, str) and not os.path.exists(name_or_path) and is_repo_id(name_or_path):
        return download_export(name_or_path, **hub_options)
    path = Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is not a directory; pass the folder written by save_pretrained or a Hugging Face Hub repo id "
            f"'org/name' ({str(name_or_path)!r} is neither)"
        )
    return path


def download_export(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The cached snapshot folder of the Hub repo ``repo_id`` (downloading only the export's files when needed).

    A repo already in the cache loads with ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``. Offline and not
    cached, not found, not authorised, unreachable, or a repo that is not an mmvicreg export: one-line
    ``FileNotFoundError`` / ``PermissionError`` / ``ConnectionError`` naming the repo and what to do instead.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
                allow_patterns=EXPORT_PATTERNS,
                library_name="mmvicreg",
            )
        )
    except Exception as e:  # mapped to one line when it is a Hub failure, re-raised otherwise
        error = hub_error(e, repo_id, local_files_only=local_files_only)
        if error is None:
            raise
        raise error from None
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{repo_id!r} on the Hugging Face Hub is not an mmvicreg model: it has no {' or '.join(missing)} "
            f"(mmvicreg models are the folders written by save_pretrained or push_to_hub)"
        )
    return folder


def _is_connection_error(e: BaseException) -> bool:
    module = type(e).__module__.split(".")[0]
    return isinstance(e, (ConnectionError, TimeoutError)) or module in ("httpx", "httpx2", "requests", "urllib3")


def _failure(e: BaseException, local_files_only: bool) -> tuple[str, str] | None:
    """``(kind, cause)`` of a ``huggingface_hub`` failure; None when ``e`` is not one (a bug: let it propagate)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = getattr(getattr(e, "response", None), "status_code", None)
    cause = e.__cause__ if isinstance(e, LocalEntryNotFoundError) and e.__cause__ is not None else e
    unreachable = isinstance(e, LocalEntryNotFoundError) or _is_connection_error(e)
    if isinstance(e, GatedRepoError):
        return "unauthorised", "not authorised (the repo is gated: accept its terms on its Hub page)"
    if isinstance(e, RevisionNotFoundError):
        return "missing", "not found (the repo has no such revision)"
    if isinstance(e, RepositoryNotFoundError):
        return "missing", "not found (no such repo, or a private one you are not authorised to see)"
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        return "unauthorised", f"not authorised (HTTP {status})"
    if local_files_only and isinstance(e, LocalEntryNotFoundError):
        return "offline", "local_files_only=True"
    if unreachable and constants.HF_HUB_OFFLINE:
        return "offline", "offline (HF_HUB_OFFLINE=1)"
    if unreachable:
        first = str(cause).splitlines()[0] if str(cause) else ""
        return "unreachable", f"the Hub cannot be reached ({type(cause).__name__}: {first})"
    if isinstance(e, HfHubHTTPError):
        return "http", f"the Hub answered HTTP {status} ({str(e).splitlines()[0]})"
    return None


LOAD_ADVICE = {
    "unauthorised": f"{LOGIN_HINT}, or pass a local folder written by save_pretrained",
    "missing": "check the name and revision (there is no local folder of that name either); for a private repo "
    f"{LOGIN_HINT}; or pass a local folder written by save_pretrained",
    "offline": "pass a local folder written by save_pretrained, or allow the download (unset HF_HUB_OFFLINE, "
    "local_files_only=False)",
    "unreachable": "pass a local folder written by save_pretrained, or retry with a network connection",
    "http": "try again later, or pass a local folder written by save_pretrained",
}
PUSH_ADVICE = {
    "unauthorised": f"{LOGIN_HINT} with write access to the repo's namespace",
    "missing": f"{LOGIN_HINT} with write access to the repo's namespace",
    "offline": f"go online (unset HF_HUB_OFFLINE) and push again; {LOCAL_HINT}",
    "unreachable": f"retry with a network connection; {LOCAL_HINT}",
    "http": f"try again later; {LOCAL_HINT}",
}


def hub_error(e: BaseException, repo_id: str, *, push: bool = False, local_files_only: bool = False) -> OSError | None:
    """The one-line error for the ``huggingface_hub`` failure ``e`` on ``repo_id``, or None if ``e`` is not one.

    ``"cannot load|push to 'org/name' ...: <cause>; <what to do>"``: a ``PermissionError`` when not authorised
    (a push to a repo the Hub says it does not know included), a ``ConnectionError`` when a push cannot reach the
    Hub or the Hub answers an error, else (loading: not found, offline and not cached) a ``FileNotFoundError``.
    """
    failure = _failure(e, local_files_only)
    if failure is None:
        return None
    kind, cause = failure
    if push:
        what, advice = f"cannot push to {repo_id!r} on the Hugging Face Hub", PUSH_ADVICE[kind]
    else:
        what, advice = f"cannot load {repo_id!r} from the Hugging Face Hub", LOAD_ADVICE[kind]
        if kind in ("offline", "unreachable"):
            cause += " and it is not in the Hugging Face cache"
    if kind == "unauthorised" or (push and kind == "missing"):  # a push to a repo one may not see is refused
        cls: type[OSError] = PermissionError
    elif push or kind == "http":
        cls = ConnectionError
    else:
        cls = FileNotFoundError
    return cls(f"{what}: {cause}; {advice}")


def _stage(directory: Path, staging: Path, repo_id: str, load_model: Callable[[Path], Any] | None) -> None:
    """Link (or copy) the export's files into ``staging``; its card's snippet points at ``repo_id``."""
    files = [directory / CONFIG_FILE, directory / WEIGHTS_FILE]
    tokenizers = directory / TOKENIZER_DIR
    if tokenizers.is_dir():
        files += sorted(p for p in tokenizers.rglob("*") if p.is_file() and p.suffix in SAVED_FILE_KINDS)
    for src in files:
        dst = staging / src.relative_to(directory)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(src, dst)
    if (directory / CARD_FILE).is_file():
        card = card_for_repo((directory / CARD_FILE).read_text(), repo_id)
    elif load_model is not None:  # an export from before cards: make one from the model itself
        card = model_card(load_model(directory), repo_id=repo_id)
    else:
        raise FileNotFoundError(
            f"{directory / CARD_FILE} is missing (an export from before model cards): re-export the model with "
            f"save_pretrained, or pass load_model (e.g. JointEmbedding.from_pretrained) to make its card"
        )
    (staging / CARD_FILE).write_text(card)


def upload_export(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    load_model: Callable[[Path], Any] | None = None,
) -> str:
    """Upload the export ``directory`` to the Hub model repo ``repo_id`` (created if needed); the commit's URL.

    The folder must be a complete export (``config.json``, ``model.safetensors``, ``tokenizers/<branch>/`` of
    text branches: else ``FileNotFoundError`` naming the missing file). Only the export's files are sent, and
    ``README.md``'s snippet loads ``repo_id``. An export from before model cards has no ``README.md``: its card is
    made from ``load_model(directory)`` (``JointEmbedding.from_pretrained``; this module does not import the
    model class, which imports it), and without ``load_model`` it is refused (``FileNotFoundError``). ``revision`` is a branch, created when missing. Offline, not
    authorised, unreachable: one-line ``ConnectionError`` / ``PermissionError`` / ``FileNotFoundError``.
    """
    from huggingface_hub import HfApi

    directory = Path(directory)
    check_export(directory)
    if not is_repo_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hugging Face Hub repo id; write it as 'org/name'")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mmvicreg-push-") as tmp:
        _stage(directory, Path(tmp), repo_id, load_model)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, token=token)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                revision=revision,
                commit_message=commit_message or "Upload mmvicreg model",
                token=token,
            )
        except Exception as e:  # mapped to one line when it is a Hub failure, re-raised otherwise
            error = hub_error(e, repo_id, push=True)
            if error is None:
                raise
            raise error from None
    return str(getattr(info, "commit_url", info))


def check_export(directory: str | os.PathLike) -> Path:
    """``directory`` if it is a complete export (config, weights, text branches' tokenizer folders); else
    ``FileNotFoundError`` naming what is missing (``ValueError`` for a config that is not an mmvicreg one)."""
    from mmvicreg.encoders import needs_tokenizer

    directory = Path(directory)
    for name, cfg in read_export_config(directory).items():
        if cfg.get("shares") is None and cfg.get("encoder") is not None and needs_tokenizer(cfg["encoder"]):
            folder = directory / TOKENIZER_DIR / name
            if not folder.is_dir() or not any(folder.iterdir()):
                raise FileNotFoundError(f"{folder} is missing: {directory} is not a complete mmvicreg export")
    return directory
