"""A self-contained HTML page of a schedule: people × local days.

No external requests (inline CSS, no scripts, no fonts). Accessible: a real table with a
caption and ``th scope``; colour is never the only cue (every cell prints its shift codes,
every breach a visible ✖ or ⚠ with a text alternative); dark text on light fills for
contrast; a legend and a full list of breaches below the grid for readers who cannot
hover. A breach is marked on the cells it concerns: its person's working days inside its
window (or the whole window when the person works none of them); a per-slot breach
(coverage, supervision) on the cells of the people on that slot. Every value is escaped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from html import escape

from rsched.domain import Assignment, ProgramData, Severity, Slot
from rsched.rules.base import Violation
from rsched.rules.report import ValidationReport, validate

PALETTE = (
    "#cfe8ff",
    "#ffe0b3",
    "#d4f5d4",
    "#f9d0e3",
    "#e6dcff",
    "#fff3a8",
    "#c8f0ee",
    "#ffd6cc",
    "#e0e0e0",
    "#dff5b8",
    "#f2d9c4",
    "#d9e4f5",
)
"""Light fills; with the page's #1a1a1a text each gives a contrast ratio above 12:1."""

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;
background:#fff;margin:1.5rem}
h1{font-size:1.4rem;margin:0 0 .5rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.summary{display:flex;flex-wrap:wrap;gap:.5rem 2rem;margin:0;padding:0}
.summary div{margin:0}.summary dt{font-weight:600}.summary dd{margin:0}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;padding:0}
.wrap{overflow-x:auto}
table{border-collapse:collapse}caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #767676;padding:2px 4px;vertical-align:top}
thead th{background:#f0f0f0;font-weight:600;white-space:nowrap}
th[scope=row]{text-align:left;white-space:nowrap;background:#fafafa}
.grid td{min-width:2.6rem}.grid .we{background:#f5f5f5}
.shift{display:inline-block;border-radius:3px;padding:0 3px;margin:1px 0;color:#1a1a1a}
.who{color:#4a4a4a;font-weight:400}
td.v{outline:3px solid #b00020;outline-offset:-3px}
td.w{outline:2px dashed #8a5300;outline-offset:-2px}
.mv{color:#b00020;font-weight:700}.mw{color:#8a5300;font-weight:700}
"""


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _local(instant: datetime | None, data: ProgramData) -> str:
    return "" if instant is None else instant.astimezone(data.tz).strftime("%Y-%m-%d %H:%M")


def _days_between(start: datetime, end: datetime, data: ProgramData) -> list[date]:
    """The local days a window [start, end) touches."""
    first = start.astimezone(data.tz).date()
    last = max(start, end - timedelta(microseconds=1)).astimezone(data.tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _describe(v: Violation) -> str:
    measure = f"value {_num(v.value)} vs limit {_num(v.limit)}. " if v.value is not None else ""
    return f"{v.rule} ({v.severity}): {measure}{v.message}"


def render_grid(
    data: ProgramData,
    assignments: Iterable[Assignment],
    report: ValidationReport | None = None,
) -> str:
    """The HTML page (``report`` defaults to a fresh validation of ``assignments``)."""
    chosen = sorted(set(assignments))
    report = report if report is not None else validate(data, chosen)
    tz = data.tz
    days = [data.start + timedelta(days=i) for i in range((data.end - data.start).days + 1)]
    codes = sorted({s.shift for s in data.slots})
    colour = {code: f"c{i % len(PALETTE)}" for i, code in enumerate(codes)}

    worked: dict[tuple[str, date], list[Slot]] = defaultdict(list)
    people_on: dict[str, list[str]] = defaultdict(list)
    for a in chosen:
        slot = data.slot_by_id.get(a.slot_id)
        if slot is not None:
            worked[a.person_id, slot.start.astimezone(tz).date()].append(slot)
            people_on[slot.id].append(a.person_id)

    marks: dict[tuple[str, date], list[Violation]] = defaultdict(list)
    for v in (*report.violations, *report.warnings):
        for cell in _cells(v, data, worked, people_on):
            marks[cell].append(v)

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(data.program.name)}: schedule {data.start} to {data.end}</title>",
        "<style>" + CSS + _palette_css() + "</style></head><body>",
        *_header(data, report),
        *_legend(data, codes, colour),
        '<div class="wrap"><table class="grid">',
        f"<caption>Assignments of {len(data.people)} people by local day "
        f"({escape(data.program.timezone)}); a shift is listed on the day it starts</caption>",
        '<thead><tr><th scope="col">Person</th>',
    ]
    for day in days:
        we = ' class="we"' if day.weekday() >= 5 else ""
        out.append(
            f'<th scope="col"{we}><abbr title="{day:%A %Y-%m-%d}">{day:%a}<br>'
            f"{day:%m-%d}</abbr></th>"
        )
    out.append("</tr></thead><tbody>")
    for person in data.people:
        who = f"PGY-{person.pgy}" if person.pgy is not None else str(person.kind)
        if not person.active:
            who += ", inactive"
        out.append(
            f'<tr><th scope="row">{escape(person.name)} '
            f'<span class="who">({escape(person.id)}, {escape(who)})</span></th>'
        )
        for day in days:
            breaches = marks.get((person.id, day), [])
            weekend = day.weekday() >= 5
            out.append(_cell(data, worked[person.id, day], breaches, colour, weekend=weekend))
        out.append("</tr>")
    out.append("</tbody></table></div>")
    out.extend(_breach_table(data, report))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _cells(
    v: Violation,
    data: ProgramData,
    worked: dict[tuple[str, date], list[Slot]],
    people_on: dict[str, list[str]],
) -> list[tuple[str, date]]:
    slot = data.slot_by_id.get(v.slot) if v.slot else None
    start = v.start or (slot.start if slot else None)
    end = v.end or (slot.end if slot else None)
    if start is None or end is None:
        return []
    window = _days_between(start, end, data)
    if v.person is None:
        if slot is None:
            return []
        day = slot.start.astimezone(data.tz).date()
        return [(p, day) for p in people_on.get(slot.id, [])]
    busy = [(v.person, d) for d in window if (v.person, d) in worked]
    return busy or [(v.person, d) for d in window]


def _cell(
    data: ProgramData,
    slots: list[Slot],
    breaches: list[Violation],
    colour: dict[str, str],
    *,
    weekend: bool,
) -> str:
    classes = ["we"] if weekend else []
    parts = []
    for slot in sorted(slots, key=lambda s: s.start):
        start = slot.start.astimezone(data.tz).strftime("%H:%M")
        end = slot.end.astimezone(data.tz).strftime("%H:%M")
        label = f"{slot.shift} {start}–{end} ({slot.kind}, slot {slot.id})"
        parts.append(
            f'<span class="shift {colour.get(slot.shift, "c0")}" title="{escape(label)}">'
            f"{escape(slot.shift)}</span>"
        )
    title = ""
    hard = [b for b in breaches if b.severity is Severity.VIOLATION]
    if breaches:
        classes.append("v" if hard else "w")
        title = ' title="' + escape("\n".join(_describe(b) for b in breaches)) + '"'
        mark, css, text = ("✖", "mv", "hard violation") if hard else ("⚠", "mw", "warning")
        rules = ", ".join(sorted({b.rule for b in breaches}))
        parts.append(
            f'<span class="{css}" role="img" aria-label="{text}: {escape(rules)}">{mark}</span>'
        )
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}{title}>{'<br>'.join(parts)}</td>"


def _palette_css() -> str:
    return "".join(f".c{i}{{background:{fill}}}" for i, fill in enumerate(PALETTE))


def _header(data: ProgramData, report: ValidationReport) -> list[str]:
    coverage = (
        f"{report.coverage:.1%} ({report.staffed_positions} of "
        f"{report.required_positions} required positions)"
    )
    hard = _by_rule(len(report.violations), report.count_by_rule(Severity.VIOLATION))
    soft = _by_rule(len(report.warnings), report.count_by_rule(Severity.WARNING))
    figures = (
        ("Coverage", coverage),
        ("Hard violations", hard),
        ("Warnings", soft),
        ("Time zone", data.program.timezone),
    )
    out = [
        "<header>",
        f"<h1>{escape(data.program.name)}: schedule {data.start} to {data.end}</h1>",
        '<dl class="summary">',
    ]
    out += [f"<div><dt>{k}</dt><dd>{escape(v)}</dd></div>" for k, v in figures]
    out += ["</dl>", "</header>"]
    return out


def _by_rule(total: int, by_rule: dict[str, int]) -> str:
    detail = ", ".join(f"{rule} {n}" for rule, n in by_rule.items())
    return f"{total} ({detail})" if detail else str(total)


def _legend(data: ProgramData, codes: list[str], colour: dict[str, str]) -> list[str]:
    kinds: dict[str, set[str]] = defaultdict(set)
    for slot in data.slots:
        kinds[slot.shift].add(str(slot.kind))
    out = ['<section aria-labelledby="legend"><h2 id="legend">Legend</h2><ul class="legend">']
    for code in codes:
        known = data.shift_type_by_code.get(code)
        name = known.name if known is not None and known.name != code else ""
        what = ", ".join(filter(None, [name, *sorted(kinds[code])]))
        out.append(
            f'<li><span class="shift {colour[code]}">{escape(code)}</span> {escape(what)}</li>'
        )
    out.append('<li><span class="mv">✖</span> hard violation (hover for rule, value, limit)</li>')
    out.append('<li><span class="mw">⚠</span> warning</li>')
    out.append("</ul></section>")
    return out


def _breach_table(data: ProgramData, report: ValidationReport) -> list[str]:
    breaches = (*report.violations, *report.warnings)
    out = ['<section aria-labelledby="breaches"><h2 id="breaches">Violations and warnings</h2>']
    if not breaches:
        return [*out, "<p>None: every rule holds.</p></section>"]
    out.append("<table><caption>Every breach found by the validator</caption><thead><tr>")
    heads = ("Rule", "Severity", "Person", "Slot", "From", "To", "Value", "Limit", "Message")
    out.append("".join(f'<th scope="col">{h}</th>' for h in heads) + "</tr></thead><tbody>")
    for v in breaches:
        cells = (
            v.rule,
            str(v.severity),
            v.person or "",
            v.slot or "",
            _local(v.start, data),
            _local(v.end, data),
            _num(v.value),
            _num(v.limit),
            v.message,
        )
        out.append(
            f'<tr><th scope="row">{escape(cells[0])}</th>'
            + "".join(f"<td>{escape(c)}</td>" for c in cells[1:])
            + "</tr>"
        )
    out.append("</tbody></table></section>")
    return out
