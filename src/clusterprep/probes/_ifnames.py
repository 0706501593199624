"""Probe part: which interfaces (or InfiniBand devices) a socket/HCA list selects, read the way
the library reading it does. Inlined by probes.load, and imported by the head's check rules, so
that check and smoke judge one `NCCL_SOCKET_IFNAME` alike; stdlib only.

NCCL (env.html: NCCL_SOCKET_IFNAME, NCCL_IB_HCA; parsed by parseStringList in its utils.cc):
a comma-separated list of prefixes; `^` first excludes what the list matches; `=` (after any
`^`) makes every entry an exact name; an entry's `:port` (HCAs) names a port, not a device.
Entries are taken as written: NCCL strips no spaces. Gloo (torch's GLOO_SOCKET_IFNAME): a
comma-separated list of exact interface names.
"""


def selected(variable, spec, names):
    """The names among `names` that `spec`, the value of `variable`, selects."""
    nccl = not variable.startswith("GLOO")
    exclude = nccl and spec.startswith("^")
    spec = spec[1:] if exclude else spec
    exact = not nccl or spec.startswith("=")
    spec = spec[1:] if nccl and spec.startswith("=") else spec
    entries = [entry.split(":")[0] if nccl else entry for entry in spec.split(",")]
    entries = [entry for entry in entries if entry]

    def hit(name):
        return any(name == entry if exact else name.startswith(entry) for entry in entries)

    return [name for name in names if hit(name) != exclude]


def named(variable, spec):
    """The entries of a list that selects by naming (not `^` excluding), without `=`/`:port`."""
    if not variable.startswith("GLOO") and spec.startswith("^"):
        return []
    spec = spec[1:] if not variable.startswith("GLOO") and spec.startswith("=") else spec
    return [entry.split(":")[0] for entry in spec.split(",") if entry.split(":")[0]]
