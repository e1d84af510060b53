"""Render the measurement tables of docs/performance.md from the records in benchmarks/results/records/.

A record is one JSON file per measurement (one benchmark invocation, or the seeds of one configuration):

* ``schema`` (1), ``id`` (the file name without ``.json``), ``date`` (YYYY-MM-DD), ``command`` (what was run),
  ``precision`` (``fp32``, ``bf16 autocast``, ...), ``machine`` (``cpu``: the CPU model and what sets its speed,
  ``cores``, ``gpu`` or null; optional ``memory_gib``, ``software``, ``notes``);
* ``status``: ``current`` (rendered), ``superseded`` (an earlier measurement of something measured again; needs
  ``superseded_by``) or ``experiment`` (a change that was tried and not kept); only current records are rendered;
* ``table``: the table it feeds (one of :data:`results_schema.TABLES`), or null for a record kept only for the
  record;
* the table's own fields (:data:`results_schema.TABLES`), optional ``raw`` (paths of the benchmark's raw outputs,
  relative to the repository root), ``goal`` (``{"text": ..., "met": true|false}``), ``figures`` (anything else
  measured) and ``notes`` (what the numbers need said beside them).

In the document a table lives between ``<!-- results:NAME ... -->`` and ``<!-- /results:NAME -->``; this script
rewrites what is between them::

    python benchmarks/render_results.py            # rewrite the tables of docs/performance.md in place
    python benchmarks/render_results.py --check    # exit 1 if a table differs from what the records give

A malformed record stops it with exit code 2 and one line naming the file, the field and what is wrong. For
time-to-accuracy records whose ``raw`` files are ``time_to_accuracy.py`` outputs, every seed's accuracy and times
must match them.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
RECORDS = REPO / "benchmarks" / "results" / "records"
DOC = REPO / "docs" / "performance.md"

MARKER = re.compile(r"(<!-- results:([a-z0-9-]+)(?: [^>]*)? -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
START = re.compile(r"<!-- results:([a-z0-9-]+)")

from results_schema import RecordError, _rel, load_records  # noqa: E402
from results_tables import RENDER, link  # noqa: E402


# ---------------------------------------------------------------------------------------------- the document
def render_doc(text: str, records: list[dict], doc: Path, folder: Path) -> str:
    """``text`` with every marked table replaced by what the current records give."""
    named = START.findall(text)
    found = [m.group(2) for m in MARKER.finditer(text)]
    for name in named:
        if name not in RENDER:
            raise RecordError(f"{_rel(doc)}: marker results:{name}: unknown table (known: {', '.join(RENDER)})")
        if named.count(name) > 1:
            raise RecordError(f"{_rel(doc)}: marker results:{name} appears twice")
        if name not in found:
            raise RecordError(f"{_rel(doc)}: marker results:{name} has no closing <!-- /results:{name} -->")

    def replace(m: re.Match) -> str:
        name = m.group(2)
        recs = sorted(
            (r for r in records if r["table"] == name and r["status"] == "current"), key=lambda r: r["id"]
        )
        if not recs:
            raise RecordError(f"{_rel(doc)}: table {name}: no current record feeds it")
        return m.group(1) + RENDER[name](recs, lambda r: link(r, doc, folder)) + m.group(4)

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the document's tables are out of date")
    ap.add_argument("--doc", type=Path, default=DOC, help="the Markdown file (default docs/performance.md)")
    ap.add_argument("--records", type=Path, default=RECORDS, help="the records folder")
    args = ap.parse_args(argv)
    try:
        records = load_records(args.records)
        text = args.doc.read_text(encoding="utf-8")
        new = render_doc(text, records, args.doc, args.records)
    except (RecordError, OSError) as e:
        print(f"render_results: {e}", file=sys.stderr)
        return 2
    shown = sum(r["status"] == "current" and r["table"] is not None for r in records)
    if new == text:
        print(f"{_rel(args.doc)}: up to date ({len(records)} records, {shown} in tables)")
        return 0
    if args.check:
        diff = difflib.unified_diff(text.splitlines(), new.splitlines(), "committed", "rendered", lineterm="", n=0)
        print("\n".join(list(diff)[:40]), file=sys.stderr)
        print(
            f"render_results: {_rel(args.doc)} is out of date with {_rel(args.records)}; "
            f"run python benchmarks/render_results.py and commit the result",
            file=sys.stderr,
        )
        return 1
    args.doc.write_text(new, encoding="utf-8")
    print(f"{_rel(args.doc)}: tables rewritten from {len(records)} records ({shown} in tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
