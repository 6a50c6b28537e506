"""The ALARM paper's benchmark numbers next to a run's reports (``alarm eval compare``, docs/reproduce.md).

``PAPER_TABLE`` holds the numbers of the paper (arXiv 2603.09556) that docs/reproduce.md reproduces: ALARM-CA
on MMAU sound and music and on MMAR, ALARM-E (ALARM-CA + AL-Whisper-Instruct-R) on MMSU and MMAU speech. Each
row names the report ``alarm eval run`` writes for it under the run's output folder (``<model>/<stem>.report.json``,
the layout of docs/reproduce.md) and the group of the report that holds the number. MMAU test's answers are
withheld: its rows are scored by the benchmark's evaluation server, not here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["PaperRow", "PAPER_TABLE", "compare", "compare_table"]


@dataclass(frozen=True)
class PaperRow:
    """One number of the paper: ``model`` folder and report ``stem`` under the output folder, the report's
    grouping ``level`` and ``group`` (None: the total), and the accuracy the paper reports, in percent."""
    model: str
    stem: str
    level: Optional[str]
    group: Optional[str]
    reported: float


PAPER_TABLE = (
    PaperRow("alarm_ca", "mmau-test-mini", "task", "sound", 66.4),
    PaperRow("alarm_ca", "mmau-test", "task", "sound", 61.1),
    PaperRow("alarm_ca", "mmau-test-mini", "task", "music", 57.2),
    PaperRow("alarm_ca", "mmau-test", "task", "music", 53.3),
    PaperRow("alarm_ca", "mmar", None, None, 48.7),
    PaperRow("alarm_e", "mmau-test-mini", "task", "speech", 77.2),
    PaperRow("alarm_e", "mmau-test", "task", "speech", 73.7),
    PaperRow("alarm_e", "mmsu", None, None, 61.3),
    PaperRow("alarm_e", "mmsu", "category", "perception", 45.4),
    PaperRow("alarm_e", "mmsu", "category", "reasoning", 78.3),
)
COLUMNS = {"paper_protocol": "paper", "official": "official", "strict": "strict"}  # entry key -> report section


def _cell(section: dict, row: PaperRow) -> Optional[float]:
    """The accuracy of ``row``'s group in one protocol's section of a report (groups matched up to case)."""
    if row.level is None:
        return section["total"]["accuracy"]
    groups = {str(k).casefold(): v for k, v in section["groups"].get(row.level, {}).items()}
    cell = groups.get(row.group.casefold())
    return None if cell is None else cell["accuracy"]


def compare(out_dir: str | Path) -> list[dict]:
    """One dict per ``PAPER_TABLE`` row: the row's fields, ``report`` (its path), ``status`` ("scored", "not run",
    "answers withheld" or "no such group") and this run's accuracy per protocol (``paper_protocol``,
    ``official``, ``strict``; None where the report has no such section, e.g. no ``--protocol paper``)."""
    out = []
    for row in PAPER_TABLE:
        path = Path(out_dir) / row.model / f"{row.stem}.report.json"
        entry = {**row.__dict__, "report": str(path), "status": "not run", **dict.fromkeys(COLUMNS)}
        if path.is_file():
            report = json.loads(path.read_text(encoding="utf-8"))
            if report.get("answers_withheld"):
                entry["status"] = "answers withheld"
            else:
                for col, section in COLUMNS.items():
                    if section in report:
                        entry[col] = _cell(report[section], row)
                entry["status"] = "scored" if entry["strict"] is not None else "no such group"
        out.append(entry)
    return out


def compare_table(rows: list[dict]) -> str:
    """``compare``'s rows as a markdown table (accuracies in percent)."""
    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    lines = ["| model | benchmark | group | paper (%) | this run: paper protocol | official | strict | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        note = {"scored": "", "not run": f"no {r['report']}",
                "answers withheld": "submit the predictions to the MMAU evaluation server",
                "no such group": f"{r['report']} has no group {r['group']!r}"}[r["status"]]
        group = "total" if r["level"] is None else f"{r['level']}: {r['group']}"
        model = {"alarm_ca": "ALARM-CA", "alarm_e": "ALARM-E"}.get(r["model"], r["model"])
        lines.append(f"| {model} | {r['stem']} | {group} | {r['reported']:.1f} | {pct(r['paper_protocol'])} | "
                     f"{pct(r['official'])} | {pct(r['strict'])} | {note} |")
    return "\n".join(lines)
