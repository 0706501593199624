"""Probe part: where a node's Hugging Face hub cache is, by huggingface_hub's own rule. Inlined
by probes.load; stdlib only, like the probes."""

import os


def hub_cache():
    """The cache huggingface_hub resolves on this node, and which setting decided it.

    The rule of huggingface_hub's constants.py (huggingface_hub@ee0a4510, lines 157-183):
    HF_HUB_CACHE, else the older HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; `~` and $VARIABLES
    expanded; a variable set to "" counts as set (os.getenv's default does not apply). A
    relative path is relative to the folder a process runs in, here the probe's own (the login
    folder): made absolute, so the head is told where the files go.
    """
    env = os.environ
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if name in env:
            return _resolved(env[name]), name
    if "HF_HOME" in env:
        return os.path.join(_resolved(env["HF_HOME"]), "hub"), "HF_HOME"
    xdg = env.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(_resolved(os.path.join(xdg, "huggingface")), "hub"), "default"


def _resolved(path):
    return os.path.abspath(os.path.expandvars(os.path.expanduser(path)))
