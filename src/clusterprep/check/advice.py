"""What to do about a difference between nodes: one line per drift Finding, built from what the
nodes reported (the startup-file line that sets a variable, the env's own pip, the folder a
plugin sits in, the port's physical state), not a generic text."""

from __future__ import annotations

from typing import Callable

from clusterprep import suggest
from clusterprep.check.facts import Fingerprint, Shadow
from clusterprep.check.fingerprint import ABSENT
from clusterprep.check.model import Finding, NodeState
from clusterprep.fleet.gather import fold

States = dict[str, NodeState]


def advise(finding: Finding, states: States) -> str:
    """The advice for a drift finding: the most specific of an item's own function or
    template, its group's, or a plain 'make them match'."""
    group, _, detail = finding.item.partition(":")
    for key in (finding.item, group):
        if key in _BY_ITEM:
            return _BY_ITEM[key](finding, detail, states) or _template("*", finding, detail)
        if key in _TEMPLATES:
            return _template(key, finding, detail)
    return _template("*", finding, detail)


def _template(key: str, finding: Finding, detail: str) -> str:
    return _TEMPLATES[key].format(detail=detail, nodes=fold(finding.nodes),
                                  ref=finding.reference, up_env=_up("env"),
                                  up_shell=_up("shell"))


def _up(step: str) -> str:
    """The command that redoes one setup step, as the user would type it here."""
    return suggest.command("up", "--only", step)


def _odd(finding: Finding) -> list[tuple[str, list[str]]]:
    """(value, nodes) for every value but the reference."""
    return [(value, nodes) for value, nodes in finding.values.items()
            if value != finding.reference]


def _facts(states: States, name: str | None) -> Fingerprint | None:
    state = states.get(name) if name else None
    return state.facts if state else None


def _shadows(states: States, node: str, name: str) -> list[Shadow]:
    facts = _facts(states, node)
    return [s for s in facts.shadowed if s.package == name] if facts else []


def _python(states: States, nodes: list[str]) -> str:
    facts = _facts(states, nodes[0])
    return (facts.python.executable if facts else None) or "python"


def _where(states: States, node: str, name: str) -> str | None:
    """Where a node's shell startup files set `name`: 'FILE:LINE (`TEXT`)', the last one."""
    facts = _facts(states, node)
    line = facts.setter(name) if facts else None
    return f"{line.file}:{line.line} (`{line.text}`)" if line else None


def _package(finding: Finding, name: str, states: States) -> str:
    advice = []
    for value, nodes in _odd(finding):
        pip = f"`{_python(states, nodes)} -m pip"
        shadows = [s for n in nodes for s in _shadows(states, n, name)]
        if finding.reference == ABSENT:
            advice.append(f"on {fold(nodes)}, {name} {value} is installed and on no other "
                          f"node: {pip} uninstall {name}` there, or install it everywhere")
        elif shadows:
            advice.append(f"on {fold(nodes)}, {name} {value} comes from "
                          f"{shadows[0].location} ({shadows[0].via}), not from the env: "
                          f"see shadowed:{name}")
        else:
            verb = "install" if value == ABSENT else "reinstall"
            advice.append(f"{verb} {name} {finding.reference} on {fold(nodes)}: {pip} install "
                          f"'{name}=={finding.reference}'` (or `{suggest.command('up')}` where "
                          "the recipe pins it)")
    return "; ".join(advice)


def _build(finding: Finding, name: str, states: States) -> str:
    nodes = finding.nodes
    facts = _facts(states, nodes[0])
    package = facts.packages.get(name) if facts else None
    version = package.version if package else None
    return (f"on {fold(nodes)}, {name} {version} is another build (same version, other "
            f"compiled files): `{_python(states, nodes)} -m pip install --force-reinstall "
            f"--no-deps '{name}=={version}'` there, from the wheel the others used")


def _shadowed(finding: Finding, name: str, states: States) -> str:
    advice = []
    for node in finding.nodes:
        for shadow in _shadows(states, node, name):
            if shadow.via == "user site-packages":
                advice.append(f"on {node}, `{_python(states, [node])} -m pip uninstall {name}` "
                              f"(it sits in {shadow.location}) or export "
                              f"PYTHONNOUSERSITE=True (`{_up('shell')}` does)")
            elif shadow.via == "PYTHONPATH":
                where = _where(states, node, "PYTHONPATH") or "outside the startup files read"
                advice.append(f"take {shadow.location} out of PYTHONPATH on {node}, set at "
                              f"{where}")
            else:
                advice.append(f"remove the .pth file or sys.path entry that puts "
                              f"{shadow.location} before the env on {node}")
    return "; ".join(advice)


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


def _torch_gpus(finding: Finding, detail: str, states: States) -> str:
    advice = []
    for value, nodes in _odd(finding):
        hidden = [n for n in nodes if (facts := _facts(states, n))
                  and "CUDA_VISIBLE_DEVICES" in facts.env]
        if hidden:
            where = _where(states, hidden[0], "CUDA_VISIBLE_DEVICES")
            advice.append(f"torch sees {value} GPUs on {fold(nodes)} because "
                          f"CUDA_VISIBLE_DEVICES is set there"
                          + (f" ({where})" if where else "") + ": unset it")
        else:
            advice.append(f"torch sees {value} GPUs on {fold(nodes)} (the others "
                          f"{finding.reference}): see gpu:count and the GPU health findings, "
                          "and drain them until all GPUs are back")
    return "; ".join(advice)


def _gpu_count(finding: Finding, detail: str, states: States) -> str:
    counts = ", ".join(f"{fold(nodes)}: {value}" for value, nodes in _odd(finding))
    return (f"nvidia-smi shows other GPU counts ({counts}) than the others' "
            f"{finding.reference}: run `nvidia-smi -L` and `dmesg | grep -i xid` there (a GPU "
            f"off the bus, or not bound to the driver) and drain {fold(finding.nodes)} until "
            "it is fixed")


def _memlock(finding: Finding, detail: str, states: States) -> str:
    where = _where(states, finding.nodes[0], "ulimit -l")
    return (f"give {fold(finding.nodes)} the others' memlock limit ({finding.reference})"
            + (f": {where} sets it there" if where else
               ": `* - memlock unlimited` in /etc/security/limits.d/"))


def _disk(finding: Finding, detail: str, states: States) -> str:
    place = detail.removeprefix("free space at the ")
    facts = _facts(states, finding.nodes[0])
    path = facts.disk.hf_cache if facts and place == "Hugging Face cache" else None
    return (f"free space on {fold(finding.nodes)} at the {place}"
            + (f" ({path})" if path else "")
            + ", or move it to a larger disk: the weights and caches go there")


def _nccl_plugins(finding: Finding, detail: str, states: States) -> str:
    ref_node = (finding.values.get(finding.reference) or [None])[0]
    ref_facts = _facts(states, ref_node)
    ref_plugins = {p.name: p.path for p in (ref_facts.nccl.plugins if ref_facts else [])}
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


_BY_ITEM: dict[str, Callable[[Finding, str, States], str]] = {
    "package": _package, "build": _build, "shadowed": _shadowed, "env": _env,
    "shell": _shell, "torch:gpus": _torch_gpus, "gpu:count": _gpu_count,
    "limits:memlock": _memlock, "disk": _disk, "nccl:net plugins": _nccl_plugins, "ib": _ib,
}
# Advice that needs only the nodes ({nodes}), the reference value ({ref}), the item's detail
# ({detail}) and the commands that redo the env or shell step ({up_env}, {up_shell});
# an item's own template before its group's.
_TEMPLATES = {
    "python:user site enabled": "export PYTHONNOUSERSITE=True on {nodes} (`{up_shell}` does): "
                                "user site-packages get in front of the env there",
    "python": "rebuild the env on {nodes} (`{up_env}`): its Python {detail} differs from the "
              "others' ({ref})",
    "torch:import": "torch does not import on {nodes}: rebuild the env there (`{up_env}`)",
    "torch": "reinstall torch on {nodes} to match the others' {detail} ({ref}): `{up_env}`, "
             "or the recipe's install command",
    "nvcc": "make {nodes} find the same nvcc as the others ({ref}): the env's cuda-nvcc "
            "(`{up_env}`), or fix the PATH that finds another one",
    "gpu:driver": "install NVIDIA driver {ref} on {nodes} like the others, then reboot: the "
                  "driver decides which CUDA and NCCL features work",
    "gpu": "on {nodes}, the GPUs differ from the others' ({ref}): run them in a job of their "
           "own, or leave them out of nodes.txt",
    "system:cpu": "on {nodes}, the CPU model differs: never share or copy JIT caches between "
                  "them and the others (~/.cache/colossalai, torch extensions); build them on "
                  "each node",
    "system": "update {nodes} to the others' {detail} ({ref}) and reboot: GPU and RDMA drivers "
              "are built for one kernel",
    "limits:open files": "raise the open files limit on {nodes} to {ref} (`* - nofile {ref}` "
                         "in /etc/security/limits.d/, then log in again)",
    "limits": "give {nodes} a /dev/shm as large as the others' ({ref} bytes): `--shm-size` or "
              "`--ipc=host` for containers, `mount -o remount,size=` on hosts",
    "clock": "run chrony or ntpd on {nodes} (`chronyc tracking` shows the offset): clocks "
             "apart make NCCL operations time out and logs disagree",
    "nccl:library": "make {nodes} load the others' NCCL, {ref} (the env's nvidia-nccl "
                    "package, or LD_LIBRARY_PATH): all ranks must run one NCCL",
    "nccl.conf": "make NCCL's config files (/etc/nccl.conf, ~/.nccl.conf) on {nodes} set "
                 "{detail} like the others ({ref})",
    "net": "set {detail} on {nodes} like the others ({ref}): `ip link set {detail} up mtu N`; "
           "NCCL's socket transport needs matching MTUs",
    "*": "make {nodes} match the others ({ref}), or the others match them",
}
