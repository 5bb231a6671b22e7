"""Bookkeeping of a chaos scenario: which ids were sent, delivered and dead-lettered, and the table row.

Every scenario sends N events with unique ids; the function server and the dead-letter topic give back
lists of ids (a list, so repeats show). The row is: scenario, sent, delivered, dead-lettered, duplicates,
lost. Rows are appended to a JSON-lines file (EVENTBUS_CHAOS_TABLE, default `.chaos/table.jsonl`) so that
`scripts/chaos` can print the table after pytest, whatever the outcome of each scenario.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE_ENV = "EVENTBUS_CHAOS_TABLE"
FULL_ENV = "EVENTBUS_CHAOS_FULL"
COLUMNS = ("scenario", "sent", "delivered", "dead-lettered", "duplicates", "lost")
SESSION_ROWS: list[Row] = []
"""The rows recorded in this process (the pytest summary prints them)."""


def full_counts() -> bool:
    """Whether to run the full counts of issue 7 (`scripts/chaos`) instead of the reduced CI counts."""
    return os.environ.get(FULL_ENV, "") not in ("", "0")


def scaled(full: int, ci: int) -> int:
    """`full` under EVENTBUS_CHAOS_FULL=1, else `ci`."""
    return full if full_counts() else ci


def table_path() -> Path:
    return Path(os.environ.get(TABLE_ENV) or ROOT / ".chaos" / "table.jsonl")


@dataclass(frozen=True)
class Row:
    """One line of the chaos table; `note` carries what the numbers alone do not say (e.g. FAIL: why)."""

    scenario: str
    sent: int
    delivered: int
    dead_lettered: int
    duplicates: int
    lost: int
    note: str = ""

    def cells(self) -> list[str]:
        return [self.scenario, str(self.sent), str(self.delivered), str(self.dead_lettered), str(self.duplicates),
                str(self.lost)]


@dataclass
class Ledger:
    """The ids of one scenario: sent (unique), delivered at the function and found in the dead-letter topic."""

    scenario: str
    sent: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._recorded = False

    def send(self, ids: Iterable[str]) -> None:
        self.sent.extend(ids)
        assert len(set(self.sent)) == len(self.sent), "a scenario must send unique ids"

    @property
    def sent_set(self) -> set[str]:
        return set(self.sent)

    def settled(self) -> set[str]:
        """Ids whose fate is known: delivered or dead-lettered."""
        return (set(self.delivered) | set(self.dead_lettered)) & self.sent_set

    def lost_ids(self) -> set[str]:
        return self.sent_set - set(self.delivered) - set(self.dead_lettered)

    def duplicate_ids(self) -> Counter[str]:
        """Id → extra copies: repeats at the function, repeats in the dead-letter topic, and ids in both."""
        extra: Counter[str] = Counter()
        for ids in (self.delivered, self.dead_lettered):
            for eid, n in Counter(ids).items():
                if n > 1:
                    extra[eid] += n - 1
        for eid in set(self.delivered) & set(self.dead_lettered):
            extra[eid] += 1
        return extra

    def row(self, note: str = "") -> Row:
        sent = self.sent_set
        return Row(
            scenario=self.scenario,
            sent=len(sent),
            delivered=len(set(self.delivered) & sent),
            dead_lettered=len(set(self.dead_lettered) & sent - set(self.delivered)),
            duplicates=sum(self.duplicate_ids().values()),
            lost=len(self.lost_ids()),
            note=note,
        )

    def record(self, note: str = "") -> Row:
        """Append this scenario's row to the table file and print it (once per ledger)."""
        row = self.row(note)
        if not self._recorded:
            self._recorded = True
            path = table_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(asdict(row)) + "\n")
            SESSION_ROWS.append(row)
            print("\n" + format_table([row]))
        return row

    def describe(self, limit: int = 10) -> str:
        """What went wrong, with sample ids, for an assertion message."""
        lost = sorted(self.lost_ids())
        dupes = self.duplicate_ids()
        parts = [f"{self.scenario}: {self.row().cells()}"]
        if lost:
            parts.append(f"lost {len(lost)} ids, e.g. {lost[:limit]}")
        if dupes:
            parts.append(f"duplicated {len(dupes)} ids, e.g. {sorted(dupes.items())[:limit]}")
        return "; ".join(parts)


def format_table(rows: Iterable[Row]) -> str:
    """A fixed-width text table with the column names of issue 7, notes after the numbers."""
    rows = list(rows)
    lines = [list(COLUMNS), *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = []
    for i, line in enumerate(lines):
        pairs = enumerate(zip(line, widths, strict=True))
        text = "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in pairs)
        if i > 0 and rows[i - 1].note:
            text += "  " + rows[i - 1].note
        out.append(text.rstrip())
    return "\n".join(out)


def read_table(path: Path | None = None) -> list[Row]:
    """The rows recorded so far (last row wins per scenario, in first-seen order)."""
    path = path or table_path()
    if not path.is_file():
        return []
    rows: dict[str, Row] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            rows[data["scenario"]] = Row(**data)
    return list(rows.values())


if __name__ == "__main__":
    print(format_table(read_table()))
