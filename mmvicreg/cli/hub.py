"""``mmvicreg push --model DIR --repo-id ORG/NAME``: upload an exported model folder to the Hugging Face Hub.

The folder is one written by ``save_pretrained`` (a training run's ``model/``), sent as it is: its
``config.json``, ``model.safetensors``, ``tokenizers/`` and model card, whose snippet is pointed at the repo (an
export from before model cards gets one made from the loaded model).
The upload itself is :func:`mmvicreg.model.hub.upload_export` (``JointEmbedding.push_to_hub`` calls it too);
errors (an incomplete folder, offline, not authorised) are one line from the command line's one handler
(``mmvicreg.cli.main``).
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.cli.common import HelpFormatter


def add_push_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``push``: the folder, the repo and how to commit to it."""
    p.add_argument("--model", required=True, help="directory written by save_pretrained (a run's model/)")
    p.add_argument("--repo-id", required=True, help="Hub model repo 'org/name' (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its setting)")
    p.add_argument("--revision", default=None, help="branch to push to (created when missing; default: main)")
    p.add_argument("--token", default=None, help="Hugging Face token (default: the one saved by `hf auth login`)")
    p.add_argument("--commit-message", default=None, help="commit message (default: 'Upload mmvicreg model')")


def run_push(args: argparse.Namespace) -> int:
    """Check the folder is a complete export, upload it, print the commit URL; 0 on success."""
    from mmvicreg.model import JointEmbedding
    from mmvicreg.model.hub import upload_export

    url = upload_export(
        args.model,
        args.repo_id,
        private=args.private or None,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
        load_model=JointEmbedding.from_pretrained,  # the card of an export from before cards
    )
    print(f"pushed {args.model} to {args.repo_id}: {url}")
    return 0


def add_push_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``push`` on the top-level ``subparsers``; the parsed args carry ``run=run_push``."""
    p = subparsers.add_parser("push", help="upload an exported model folder to the Hugging Face Hub",
                              description="Upload a folder written by save_pretrained (a run's model/) to a Hugging\n"
                                          "Face Hub model repo, with its model card.", formatter_class=HelpFormatter)
    add_push_arguments(p)
    p.set_defaults(run=run_push)
    return p
