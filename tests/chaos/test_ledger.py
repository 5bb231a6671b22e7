"""The chaos bookkeeping itself: duplicates and losses are counted the way the table says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ledger as ledger_module
from tests.chaos.ledger import Ledger, Row, format_table, read_table


def test_row_counts_delivered_dead_lettered_duplicates_and_lost() -> None:
    ledger = Ledger("s")
    ledger.send(["a", "b", "c", "d", "e"])
    ledger.delivered = ["a", "a", "b", "x"]  # "a" twice; "x" was never sent
    ledger.dead_lettered = ["b", "c", "c"]  # "b" delivered and dead-lettered; "c" dead-lettered twice
    assert ledger.row() == Row("s", sent=5, delivered=2, dead_lettered=1, duplicates=3, lost=2)
    assert ledger.lost_ids() == {"d", "e"}
    assert "lost 2 ids" in ledger.describe()


def test_sent_ids_must_be_unique() -> None:
    with pytest.raises(AssertionError):
        Ledger("s").send(["a", "a"])


def test_record_appends_rows_and_the_last_row_per_scenario_wins(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_CHAOS_TABLE", str(tmp_path / "t.jsonl"))
    monkeypatch.setattr(ledger_module, "SESSION_ROWS", [])  # keep these rows out of the session's table
    first = Ledger("one")
    first.send(["a"])
    first.record("FAIL: why")
    again = Ledger("one")
    again.send(["a"])
    again.delivered = ["a"]
    again.record()
    rows = read_table()
    assert rows == [Row("one", 1, 1, 0, 0, 0)]
    table = format_table([*rows, Row("two", 10, 9, 1, 0, 0, "note")])
    assert table.splitlines()[0].split() == ["scenario", "sent", "delivered", "dead-lettered", "duplicates", "lost"]
    assert table.splitlines()[2].endswith("note")
