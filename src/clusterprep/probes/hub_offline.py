"""Run inside the recipe's env by `weights verify --load` when the recipe has no
[[weights.load]] (not a stdlib probe: its python must have huggingface_hub, as the code's
loaders do): what huggingface_hub itself can prove offline on this node. For each repo, the
revision resolves (snapshot_download(local_files_only=True)) and every needed file is found in
the cache (try_to_load_from_cache); then scan_cache_dir reports no warnings for the cache.

Argument: JSON [{"id", "revision", "allow_patterns", "files"}]. Prints one line per repo and
per warning; exit status 1 when anything is missing.
"""

import json
import os
import sys


def check(repo):
    """What is wrong with one repo in this node's cache ('' when nothing)."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    try:
        folder = snapshot_download(repo["id"], revision=repo["revision"], local_files_only=True,
                                   allow_patterns=repo["allow_patterns"])
    except Exception as e:  # huggingface_hub's LocalEntryNotFoundError and kin: say it as is
        return f"{type(e).__name__}: {e}"
    missing = [name for name in repo["files"]
               if not isinstance(found := try_to_load_from_cache(
                   repo["id"], name, revision=repo["revision"]), str)
               or not os.path.isfile(found)]
    if missing:
        return (f"{len(missing)} of {len(repo['files'])} files are not in {folder}: "
                + ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else ""))
    return ""


def main(repos):
    from huggingface_hub import scan_cache_dir

    failed = False
    for repo in repos:
        why = check(repo)
        failed = failed or bool(why)
        print(f"{repo['id']}@{repo['revision']}: " + (why or f"{len(repo['files'])} files "
                                                           "resolve offline"))
    try:
        warnings = scan_cache_dir().warnings
    except Exception as e:  # a cache folder that is not there: CacheNotFound
        warnings = [e]
    for warning in warnings:
        print(f"scan_cache_dir: {warning}")
    sys.exit(1 if failed or warnings else 0)


main(json.loads(sys.argv[1]))
