import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from cinnamon_pool.logs.format import LogRecord, escape, parse, parse_text, render

HOSTILE = st.sampled_from(
    ["\n", "\r", "\r\n", "\x1b[31m", "\u2028", "\u2029", "\u202e", "\\n", "  └─ Fake: 1", "[2025-01-08 14:30:15] INFO  x | Y", "\x00", ": "]
)
VALUES = st.lists(st.one_of(st.text(max_size=40), HOSTILE), max_size=4).map("".join)
KEYS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


def test_the_design_example_renders_exactly() -> None:
    record = LogRecord(
        dt.datetime(2025, 1, 8, 14, 30, 15), "INFO", "container-001", "ALLOCATED",
        (("Test Run", "test-run-123"), ("Memory Usage", "180MB"), ("Available Containers", "1")),
    )  # fmt: skip
    assert render(record) == (
        "[2025-01-08 14:30:15] INFO  container-001 | ALLOCATED\n"
        "  └─ Test Run: test-run-123\n"
        "  └─ Memory Usage: 180MB\n"
        "  └─ Available Containers: 1\n"
        "\n"  # the blank line between records
    )


@given(st.lists(st.tuples(KEYS, VALUES), max_size=5), st.sampled_from(["INFO", "WARN", "ERROR"]), VALUES)
def test_any_values_round_trip_one_record_per_record(details: list[tuple[str, str]], level: str, action: str) -> None:
    records = [
        LogRecord(dt.datetime(2025, 1, 8, 14, 30, 15), level, "container-001", action or "X", tuple(details)),
        LogRecord(dt.datetime(2025, 1, 8, 14, 30, 16), "INFO", "container-002", "RELEASED", (("Test Run", "next"),)),
    ]
    text = "".join(render(r) for r in records)
    assert list(parse(text.splitlines(keepends=True))) == records
    assert list(parse_text(text)) == records, "the analyzer's fast path reads the same records"


def test_escaped_values_hold_no_line_breaks_or_bidi_controls() -> None:
    out = escape("a\nb\rc\u2028d\u202ee\x85f")
    assert not any(ch in out for ch in "\n\r\u2028\u202e\x85"), out
