"""`clusterprep smoke --html FILE`: the smoke run as one self-contained page, in the style of
the check report (`render/html.py`), for someone who was not at the terminal."""

from __future__ import annotations

from html import escape

from clusterprep.fleet.gather import fold
from clusterprep.render.html import page
from clusterprep.smoke.model import (
    CollectiveResult,
    HandoverResult,
    LinksResult,
    NamesResult,
    PhaseResult,
    RendezvousResult,
    SmokeReport,
)


def smoke_page(report: SmokeReport, title: str = "clusterprep smoke") -> str:
    failed = report.failed_phase
    if report.interrupted:
        verdict = f"interrupted during {report.phases[-1].name}"
    elif failed is not None:
        verdict = f"failed at {failed.name}: the phases after it did not run"
    else:
        verdict = f"passed: {len(report.phases)} phases"
    sections = [_section(phase) for phase in report.phases]
    return page(title, f"{len(report.nodes)} nodes", report.ok, verdict, sections)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _mark(ok: bool, text: str = "") -> str:
    label = escape(text or ("ok" if ok else "FAIL"))
    return f"<span class='{'ok' if ok else 'fail'}'>{label}</span>"


def _section(phase: PhaseResult) -> str:
    state = "interrupted" if phase.interrupted else "ok" if phase.ok else "failed"
    parts = [f"<h2>{escape(phase.name)}: {_mark(phase.ok, state)} "
             f"<small>({phase.seconds:.1f} s)</small></h2>"]
    if isinstance(phase, NamesResult):
        parts.append(f"<p>master address <code>{escape(phase.master)}</code></p>")
        parts.append(_table(["name", "address", "alike on", "differs on"], [
            [escape(r.name), escape(r.address or "-"), escape(fold(r.agreeing)),
             _mark(False, "; ".join(f"{nodes}: {value}" for value, nodes in r.differing()))
             if r.others else ""] for r in phase.rows]))
    elif isinstance(phase, RendezvousResult):
        parts.append(f"<p><code>{escape(phase.master)}:{phase.port}</code> from every node</p>")
        parts.append(_table(["node", "connect ms", "result"], [
            [escape(d.node), f"{d.ms:.1f}" if d.ms is not None else "-",
             _mark(d.ok, "reached the head" if d.ok else d.cause)] for d in phase.dials]))
    elif isinstance(phase, LinksResult):
        ok = phase.pairs_checked - len(phase.pair_failures)
        parts.append(f"<p>{ok} of {phase.pairs_checked} connections ok "
                     f"({'every pair' if phase.all_pairs else 'ring neighbours only'})</p>")
        parts.append(_table(["link", "connect ms", "MB/s", "verdict"], [
            [escape(f"{l.source} -> {l.target}"), f"{l.ms:.1f}" if l.ms is not None else "-",
             f"{l.mb_per_s:.1f}" if l.mb_per_s is not None else "-",
             _mark(l.ok and not l.slow, "slow" if l.slow else l.cause)] for l in phase.ring]))
    elif isinstance(phase, CollectiveResult):
        left = (f"{len(phase.leftovers)} of its processes were still alive at its end "
                "(noted and killed)" if phase.leftovers else "nothing of it was left running")
        parts.append(f"<p>all_reduce, {escape(phase.backend)}, {phase.world} ranks on "
                     f"{len(phase.nproc)} nodes, torch {escape(str(phase.torch))}; "
                     f"{left}</p>")
        parts.append(_table(
            ["size (B)", "count", "time (us)", "algbw (GB/s)", "busbw (GB/s)", "#wrong"], [
                [str(s.bytes), str(s.count), f"{s.time_us:.1f}", f"{s.algbw:.3f}",
                 f"{s.busbw:.3f}", _mark(not s.wrong, str(s.wrong))] for s in phase.sizes]))
    elif isinstance(phase, HandoverResult) and phase.hosts:
        parts.append(f"<p>hostfile <code>{escape(phase.hostfile)}</code>: "
                     f"{escape(', '.join(phase.hosts))}</p>")
        parts.append(f"<p>DeepSpeed's hostfile <code>{escape(phase.deepspeed_hostfile)}</code> "
                     "(<code>HOST slots=N</code>)</p>")
        parts.append(f"<p>colossalai: <code>{escape(phase.colossalai)}</code></p>")
        parts.append(f"<p>deepspeed: <code>{escape(phase.deepspeed)}</code></p>")
        parts.append(_table(["host", "torchrun"], [
            [escape(h), f"<code>{escape(line)}</code>"]
            for h, line in zip(phase.hosts, phase.torchrun)]))
    if phase.problems:
        parts.append(_table(["where", "cause", "next step"], [
            [escape(p.where), _mark(False, p.cause), escape(p.next_step)]
            for p in phase.problems]))
    return "".join(parts)
