"""What to do about a difference between nodes: one line per drift Finding, built from what the
nodes reported (the startup-file line that sets a variable, the env's own pip, the folder a
plugin sits in, the port's physical state), not a generic text."""

from __future__ import annotations

from typing import Any, Callable

from clusterprep.check.fingerprint import ABSENT
from clusterprep.check.model import Finding, NodeState
from clusterprep.fleet.gather import fold

States = dict[str, NodeState]


def advise(finding: Finding, states: States) -> str:
    """The advice for a drift finding."""
    group, _, detail = finding.item.partition(":")
    return _BY_GROUP.get(group, _align)(finding, detail, states)


def _odd(finding: Finding) -> list[tuple[str, list[str]]]:
    """(value, nodes) for every value but the reference."""
    return [(value, nodes) for value, nodes in finding.values.items()
            if value != finding.reference]


def _words(finding: Finding) -> dict[str, Any]:
    return {"nodes": fold(finding.nodes), "ref": finding.reference,
            "ref_nodes": fold(finding.values.get(finding.reference, []))}


def _fingerprint(states: States, name: str) -> dict[str, Any]:
    state = states.get(name)
    return (state.fingerprint if state else None) or {}


def _python(states: States, nodes: list[str]) -> str:
    return _fingerprint(states, nodes[0]).get("python", {}).get("executable") or "python"


def _where(states: States, node: str, name: str) -> str | None:
    """Where a node's shell startup files set `name`: 'FILE:LINE (`TEXT`)', the last one."""
    lines = _fingerprint(states, node).get("startup_lines", {}).get(name)
    if not lines:
        return None
    line = lines[-1]
    return f"{line['file']}:{line['line']} (`{line['text']}`)"


def _align(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    return f"make {words['nodes']} match the others ({words['ref']}), or the others match them"


def _package(finding: Finding, name: str, states: States) -> str:
    advice = []
    for value, nodes in _odd(finding):
        pip = f"`{_python(states, nodes)} -m pip"
        shadows = [s for n in nodes for s in _fingerprint(states, n).get("shadowed", [])
                   if s["package"] == name]
        if finding.reference == ABSENT:
            advice.append(f"on {fold(nodes)}, {name} {value} is installed and on no other "
                          f"node: {pip} uninstall {name}` there, or install it everywhere")
        elif shadows:
            advice.append(f"on {fold(nodes)}, {name} {value} comes from "
                          f"{shadows[0]['location']} ({shadows[0]['via']}), not from the env: "
                          f"see shadowed:{name}")
        else:
            verb = "install" if value == ABSENT else "reinstall"
            advice.append(f"{verb} {name} {finding.reference} on {fold(nodes)}: {pip} install "
                          f"'{name}=={finding.reference}'` (or `clusterprep up` where the "
                          "recipe pins it)")
    return "; ".join(advice)


def _build(finding: Finding, name: str, states: States) -> str:
    nodes = finding.nodes
    version = _fingerprint(states, nodes[0]).get("packages", {}).get(name, {}).get("version")
    return (f"on {fold(nodes)}, {name} {version} is another build (same version, other "
            f"compiled files): `{_python(states, nodes)} -m pip install --force-reinstall "
            f"--no-deps '{name}=={version}'` there, from the wheel the others used")


def _shadowed(finding: Finding, name: str, states: States) -> str:
    advice = []
    for node in finding.nodes:
        for shadow in _fingerprint(states, node).get("shadowed", []):
            if shadow["package"] != name:
                continue
            if shadow["via"] == "user site-packages":
                advice.append(f"on {node}, `{_python(states, [node])} -m pip uninstall {name}` "
                              f"(it sits in {shadow['location']}) or export "
                              "PYTHONNOUSERSITE=True (`clusterprep up --only shell` does)")
            elif shadow["via"] == "PYTHONPATH":
                where = _where(states, node, "PYTHONPATH") or "outside the startup files read"
                advice.append(f"take {shadow['location']} out of PYTHONPATH on {node}, set at "
                              f"{where}")
            else:
                advice.append(f"remove the .pth file or sys.path entry that puts "
                              f"{shadow['location']} before the env on {node}")
    return "; ".join(advice) or _align(finding, name, states)


def _env(finding: Finding, name: str, states: States) -> str:
    advice = []
    ref_node = (finding.values.get(finding.reference) or [None])[0]
    for value, nodes in _odd(finding):
        where = _where(states, nodes[0], name)
        if value == ABSENT:
            source = _where(states, ref_node, name) if ref_node else None
            advice.append(f"on {fold(nodes)}, {name} is unset where the others have "
                          f"{name}={finding.reference}" + (f" ({ref_node}: {source})"
                                                           if source else "")
                          + ": set it the same there")
        else:
            at = f"at {where}" if where else ("outside the startup files clusterprep reads "
                                              "(sshd, PAM or a module system)")
            others = ("leave it unset" if finding.reference == ABSENT
                      else f"have {finding.reference}")
            advice.append(f"on {fold(nodes)}, {name}={value} is set {at} where the others "
                          f"{others}: change that line, or set it the same on every node")
    return "; ".join(advice)


def _shell(finding: Finding, detail: str, states: States) -> str:
    advice = []
    for value, nodes in _odd(finding):
        where = _where(states, nodes[0], "PATH")
        advice.append(f"on {fold(nodes)}, PATH finds {value} where the others find "
                      f"{finding.reference}" + (f": fix {where}" if where else ""))
    return "; ".join(advice)


def _python_item(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "user site enabled":
        return (f"export PYTHONNOUSERSITE=True on {words['nodes']} (`clusterprep up --only "
                "shell` does): user site-packages get in front of the env there")
    return (f"rebuild the env on {words['nodes']} (`clusterprep up --only env`): its Python "
            f"{detail} differs from the others' ({words['ref']})")


def _torch(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "gpus":
        advice = []
        for value, nodes in _odd(finding):
            hidden = [n for n in nodes
                      if "CUDA_VISIBLE_DEVICES" in _fingerprint(states, n).get("env", {})]
            if hidden:
                where = _where(states, hidden[0], "CUDA_VISIBLE_DEVICES")
                advice.append(f"torch sees {value} GPUs on {fold(nodes)} because "
                              f"CUDA_VISIBLE_DEVICES is set there"
                              + (f" ({where})" if where else "") + ": unset it")
            else:
                advice.append(f"torch sees {value} GPUs on {fold(nodes)} (the others "
                              f"{finding.reference}): see gpu:count and the GPU health "
                              "findings, and drain them until all GPUs are back")
        return "; ".join(advice)
    if detail == "import":
        return (f"torch does not import on {words['nodes']}: rebuild the env there "
                "(`clusterprep up --only env`)")
    return (f"reinstall torch on {words['nodes']} to match the others' {detail} "
            f"({words['ref']}): `clusterprep up --only env`, or the recipe's install command")


def _nvcc(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if finding.reference == ABSENT:
        return (f"on {words['nodes']}, an nvcc is found that no other node has: take it off "
                "PATH there, or give every node the same CUDA toolkit")
    return (f"give {words['nodes']} nvcc {words['ref']} like the others (the env's "
            "cuda-nvcc: `clusterprep up --only env`), or fix the PATH that finds another one")


def _gpu(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "count":
        counts = ", ".join(f"{fold(nodes)}: {value}" for value, nodes in _odd(finding))
        return (f"nvidia-smi shows other GPU counts ({counts}) than the others' "
                f"{words['ref']}: run `nvidia-smi -L` and `dmesg | grep -i xid` there (a GPU "
                f"off the bus, or not bound to the driver) and drain {words['nodes']} until "
                "it is fixed")
    if detail == "driver":
        return (f"install NVIDIA driver {words['ref']} on {words['nodes']} like the others, "
                "then reboot: the driver decides which CUDA and NCCL features work")
    return (f"on {words['nodes']}, the GPUs differ from the others' ({words['ref']}): run "
            "them in a job of their own, or leave them out of nodes.txt")


def _system(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "cpu":
        return (f"on {words['nodes']}, the CPU model differs: never share or copy JIT caches "
                "between them and the others (~/.cache/colossalai, torch extensions); build "
                "them on each node")
    return (f"update {words['nodes']} to the others' {detail} ({words['ref']}) and reboot: "
            "GPU and RDMA drivers are built for one kernel")


def _limits(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "memlock":
        where = _where(states, finding.nodes[0], "ulimit -l")
        return (f"give {words['nodes']} the others' memlock limit ({words['ref']})"
                + (f": {where} sets it there" if where else
                   ": `* - memlock unlimited` in /etc/security/limits.d/"))
    if detail == "open files":
        return (f"raise the open files limit on {words['nodes']} to {words['ref']} "
                f"(`* - nofile {words['ref']}` in /etc/security/limits.d/, then log in again)")
    return (f"give {words['nodes']} a /dev/shm as large as the others' ({words['ref']} "
            "bytes): `--shm-size` or `--ipc=host` for containers, `mount -o remount,size=` "
            "on hosts")


def _disk(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    place = detail.removeprefix("free space at the ")
    disk = _fingerprint(states, finding.nodes[0]).get("disk", {})
    path = disk.get("hf_cache") if place == "Hugging Face cache" else None
    return (f"free space on {words['nodes']} at the {place}" + (f" ({path})" if path else "")
            + ", or move it to a larger disk: the weights and caches go there")


def _clock(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    return (f"run chrony or ntpd on {words['nodes']} (`chronyc tracking` shows the offset): "
            "clocks apart make NCCL operations time out and logs disagree")


def _nccl(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    if detail == "library":
        return (f"make {words['nodes']} load the others' NCCL, {words['ref']} (the env's "
                "nvidia-nccl package, or LD_LIBRARY_PATH): all ranks must run one NCCL")
    ref_node = (finding.values.get(finding.reference) or [None])[0]
    ref_plugins = {p["name"]: p["path"] for p in
                   (_fingerprint(states, ref_node).get("nccl") or {}).get("plugins", [])}
    advice = []
    for value, nodes in _odd(finding):
        have = set() if value == ABSENT else set(value.split(", "))
        missing = [name for name in ref_plugins if name not in have]
        extra = sorted(have - set(ref_plugins))
        if missing:
            advice.append(f"install {', '.join(missing)} on {fold(nodes)} (the others load "
                          f"{ref_plugins[missing[0]]}) or put its folder on LD_LIBRARY_PATH "
                          "there: without it NCCL reaches peers another way and hangs with "
                          "some of them (NVIDIA/nccl#1634)")
        if extra:
            advice.append(f"remove {', '.join(extra)} from {fold(nodes)} or install it on "
                          "every node: one NCCL transport for all ranks")
    return "; ".join(advice)


def _nccl_conf(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    return (f"make NCCL's config files (/etc/nccl.conf, ~/.nccl.conf) on {words['nodes']} set "
            f"{detail} like the others ({words['ref']})")


def _ib(finding: Finding, detail: str, states: States) -> str:
    device, _, port = detail.partition(" port ")
    if not port:
        device = device.removesuffix(" firmware")
        return (f"update {device}'s firmware on {fold(finding.nodes)} to the others' "
                f"({finding.reference}) with mlxfwmanager")
    reference = finding.reference.split(", ")
    advice = []
    for value, nodes in _odd(finding):
        where = f"{device} port {port} on {fold(nodes)}"
        if value == ABSENT:
            advice.append(f"on {fold(nodes)}, {device} port {port} is missing: check the "
                          "card (`lspci | grep -i mellanox`) and its driver (`ibstat`)")
            continue
        state, phys, rate, layer = (value.split(", ") + ["", "", "", ""])[:4]
        if state != "ACTIVE":
            why = {"Polling": "no link: check the cable and the switch port",
                   "Disabled": "disabled: enable it (`ibportstate` or the switch)",
                   "LinkUp": "link up but not configured: is the subnet manager (opensm, UFM) "
                             "running?"}.get(phys, f"physical state {phys}: `ibstat` there")
            advice.append(f"{where} is {state}, {why}; until it is ACTIVE NCCL there falls "
                          "back to sockets (4-5x slower) or fails")
        elif len(reference) > 2 and rate != reference[2]:
            advice.append(f"{where} runs at {rate}, the others at {reference[2]}: reseat or "
                          "replace the cable")
        else:
            advice.append(f"{where} is {value}, the others {finding.reference}: configure "
                          "it like them (mlxconfig LINK_TYPE for the link layer)")
    return "; ".join(advice)


def _net(finding: Finding, detail: str, states: States) -> str:
    words = _words(finding)
    return (f"set {detail} on {words['nodes']} like the others ({words['ref']}): "
            f"`ip link set {detail} up mtu N`; NCCL's socket transport needs matching MTUs")


_BY_GROUP: dict[str, Callable[[Finding, str, States], str]] = {
    "package": _package, "build": _build, "shadowed": _shadowed, "env": _env,
    "shell": _shell, "python": _python_item, "torch": _torch, "nvcc": _nvcc, "gpu": _gpu,
    "system": _system, "limits": _limits, "disk": _disk, "clock": _clock, "nccl": _nccl,
    "nccl.conf": _nccl_conf, "ib": _ib, "net": _net,
}
