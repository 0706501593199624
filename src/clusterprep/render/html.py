"""`clusterprep check --html FILE`: one self-contained page (no network needed to view it) with
the check matrix and the findings with what to do about each, for someone who was not at the
terminal."""

from __future__ import annotations

import datetime
from html import escape

from clusterprep.check.drift import no_drift
from clusterprep.check.model import CRITICAL, CheckReport
from clusterprep.fleet.gather import fold

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f4f4f4; text-align: left; } .ok { color: #176c2c; } .fail { color: #b00020; }
.critical { color: #b00020; font-weight: bold; } .warning { color: #9a6700; font-weight: bold; }
.verdict { font-size: 1.2em; padding: .5em 1em; display: inline-block; border-radius: 4px; }
.good { background: #e6f4ea; } .bad { background: #fce8e6; } code { font-size: 12px; }
.advice { max-width: 40em; }
"""


def check_page(report: CheckReport, title: str = "clusterprep check") -> str:
    """The whole report as one HTML document (a string)."""
    verdict = ("ready: every check passes and no critical drift" if report.ok else
               "not ready: see the failures and findings below")
    return page(title, f"{len(report.nodes)} nodes", report.ok, verdict,
                [_matrix(report), _findings(report)])


def page(title: str, subtitle: str, ok: bool, verdict: str, sections: list[str]) -> str:
    """A self-contained page in the house style: title, subtitle and date, verdict, then the
    `sections` (HTML) in order. Shared by every command's HTML report."""
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1><p>{escape(subtitle)}, {escape(when)}</p>",
             f"<p><span class='verdict {'good' if ok else 'bad'}'>{escape(verdict)}</span></p>",
             *sections, "</body></html>"]
    return "\n".join(parts)


def _matrix(report: CheckReport) -> str:
    names = report.check_names
    rows = ["<h2>Install checks</h2><table><tr><th>nodes</th>"
            + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>"]
    for row in report.matrix():
        label = escape(fold(row.nodes)) + (" (head)" if row.head else "")
        if row.error is not None:
            rows.append(f"<tr><td>{label}</td><td class='fail' colspan='{max(1, len(names))}'>"
                        f"{escape(row.error.kind)}: {escape(row.error.message)}</td></tr>")
            continue
        cells = []
        for name in names:
            c = row.checks.get(name)
            if c is None:
                cells.append("<td>-</td>")
            else:
                css, mark = ("ok", "ok") if c.ok else ("fail", "FAIL")
                detail = escape(c.value or "") + (
                    f"<br><small>{escape(c.message)}</small>" if c.message else "")
                cells.append(f"<td class='{css}'>{mark} {detail}</td>")
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def _findings(report: CheckReport) -> str:
    if not report.findings:
        compared, words = no_drift(report.nodes)
        return (f"<h2>Findings</h2><p class='{'ok' if compared else 'fail'}'>"
                f"{escape(words[0].upper() + words[1:])}.</p>")
    rows = ["<h2>Findings</h2><table><tr><th>severity</th><th>item</th><th>value</th>"
            "<th>nodes</th><th>what to do</th></tr>"]
    for f in sorted(report.findings, key=lambda f: f.severity != CRITICAL):
        span = f"rowspan='{len(f.values)}'"
        first = True
        for value, nodes in f.values.items():
            head = (f"<td {span} class='{f.severity}'>{f.severity}<br><small>{f.kind}</small>"
                    f"</td><td {span}>{escape(f.item)}</td>") if first else ""
            advice = f"<td {span} class='advice'>{escape(f.advice)}</td>" if first else ""
            ref = " <small>(reference)</small>" if value == f.reference else ""
            rows.append(f"<tr>{head}<td><code>{escape(value)}</code>{ref}</td>"
                        f"<td>{escape(fold(nodes))}</td>{advice}</tr>")
            first = False
    rows.append("</table>")
    return "".join(rows)
