"""Push the study to the Hugging Face Hub: the SFT and DPO adapters, the results and a model card.

What is uploaded is described in :mod:`reporting.publish`. The repository is private unless ``--public``.
The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``); this script never prints, logs or
writes it. ``--dry-run`` writes the exact folder that would be uploaded (to ``--out``), lists it and contacts
nothing: a base model on the Hub then has no license in the preview's cards (the upload reads it from the
Hub; a local base's README.md gives it in both).

Usage::

    python scripts/upload_results.py --repo-id you/mistral-7b-sft-dpo --set study
    python scripts/upload_results.py --repo-id you/tiny-sft-dpo --dry-run --out results/upload_preview
"""

from __future__ import annotations

import installed  # noqa: F401  (first: one error line, not a traceback, without the project's install)

# isort: split
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from reporting.publish import SETS, UploadError, check_repo_id, listing, preview, publish


def main(argv: list[str] | None = None, api: Any = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-id", help="Hub repository, owner/name (required: nothing is guessed)")
    parser.add_argument("--set", choices=sorted(SETS), default="tiny", help="default export and results folders")
    parser.add_argument("--sft", type=Path, help="SFT export folder (default: the set's)")
    parser.add_argument("--dpo", type=Path, help="DPO export folder (default: the set's)")
    parser.add_argument("--results", type=Path, help="results folder (default: the set's)")
    parser.add_argument("--merged", action="store_true", help="also upload base + SFT + DPO merged weights")
    parser.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    parser.add_argument("--dry-run", action="store_true", help="write and list the folder; upload nothing")
    parser.add_argument("--out", type=Path, default=Path("results/upload_preview"), help="--dry-run folder")
    args = parser.parse_args(argv)
    defaults = SETS[args.set]
    folders = [args.sft or Path(defaults["sft"]), args.dpo or Path(defaults["dpo"])]
    folders.append(args.results or Path(defaults["results"]))
    visibility = "public" if args.public else "private"
    try:
        repo_id = check_repo_id(args.repo_id)
        if args.dry_run:
            files = preview(args.out, repo_id, *folders, args.merged)
            print(f"[upload] dry run: {args.out} holds what would be uploaded to {repo_id} ({visibility}):")
            print(listing(args.out, files))
            return 0
        url = publish(repo_id, *folders, args.merged, not args.public, api)
    except UploadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[upload] done: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
