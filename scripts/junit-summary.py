#!/usr/bin/env python3
"""Counts and writes the JUnit XML reports of the test runners, for the
closing lines of scripts/test and scripts/test-clients. Standard library only.

    junit-summary.py summary [--total LABEL] LABEL=REPORT[,REPORT...] ...
        Prints `LABEL: N passed, M failed` for every group, joined by "; ",
        then `TOTAL: N passed, M failed` over all of them (TOTAL is "total"
        unless --total says otherwise). A REPORT is a JUnit file (a glob is
        allowed), or `cargo-test:FILE`: the saved output of `cargo test`,
        which writes no JUnit, counted from its `test result:` lines. A
        missing report counts nothing (a note goes to stderr).

    junit-summary.py record FILE SUITE NAME passed|failed|skipped [MESSAGE]
        Adds one test case to FILE (created when missing). For the runners
        that are scripts of ours: scripts/check-deploy, scripts/test-container,
        scripts/bench-smoke, the clippy step of scripts/test.

    junit-summary.py exit-status FILE NAME STATUS
        When a runner exited with STATUS != 0 but FILE records no failure
        (it crashed, or found no tests), adds a failed test case saying so:
        such a run counts as one failure.

How a test case counts: with a <skipped> element it is neither passed nor
failed (skipped tests, node's todo tests even when they fail, pytest's
xfail); with a <failure> or <error> element it failed (node's cancelled and
timed-out tests, nextest's timeouts included); otherwise it passed.
"""

from __future__ import annotations

import glob
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

USAGE = __doc__.split("How a test case counts")[0].strip()


def count_junit(path: Path) -> tuple[int, int]:
    passed = failed = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if "skipped" in tags:
            continue
        if tags & {"failure", "error"}:
            failed += 1
        else:
            passed += 1
    return passed, failed


def count_cargo_test(path: Path) -> tuple[int, int]:
    """Sums `test result: ok. 12 passed; 0 failed; ...`, one line per test binary."""
    passed = failed = 0
    for m in re.finditer(r"^test result: \w+\. (\d+) passed; (\d+) failed;", path.read_text(errors="replace"), re.M):
        passed += int(m.group(1))
        failed += int(m.group(2))
    return passed, failed


def count_report(spec: str) -> tuple[int, int]:
    if spec.startswith("cargo-test:"):
        paths, counter = [spec.removeprefix("cargo-test:")], count_cargo_test
    else:
        paths, counter = sorted(glob.glob(spec)) or [spec], count_junit
    passed = failed = 0
    for name in paths:
        path = Path(name)
        if not path.is_file():
            print(f"junit-summary: no report at {path}; counted as 0", file=sys.stderr)
            continue
        try:
            p, f = counter(path)
        except ET.ParseError as exc:
            print(f"junit-summary: {path} is not valid XML ({exc}); counted as 0", file=sys.stderr)
            continue
        passed += p
        failed += f
    return passed, failed


def summary(args: list[str]) -> int:
    total_label = "total"
    if args[:1] == ["--total"] and len(args) >= 2:
        total_label, args = args[1], args[2:]
    groups = []
    for arg in args:
        label, sep, reports = arg.partition("=")
        if not sep:
            print(f"junit-summary: {arg}: want LABEL=REPORT[,REPORT...]", file=sys.stderr)
            return 2
        counts = [count_report(r) for r in reports.split(",") if r]
        groups.append((label, sum(p for p, _ in counts), sum(f for _, f in counts)))
    print("; ".join(f"{label}: {p} passed, {f} failed" for label, p, f in groups))
    print(f"{total_label}: {sum(g[1] for g in groups)} passed, {sum(g[2] for g in groups)} failed")
    return 0


def load_or_new(path: Path, suite: str) -> tuple[ET.ElementTree, ET.Element]:
    """The report at `path` (a new one when missing), and its testsuite `suite`."""
    tree = ET.parse(path) if path.is_file() else ET.ElementTree(ET.Element("testsuites"))
    root = tree.getroot()
    node = next((s for s in root.iter("testsuite") if s.get("name") == suite), None)
    if node is None:
        node = ET.SubElement(root, "testsuite", name=suite)
    return tree, node


def add_case(path: Path, suite: str, name: str, result: str, message: str = "") -> None:
    tree, node = load_or_new(path, suite)
    case = ET.SubElement(node, "testcase", name=name, classname=suite)
    if result == "failed":
        ET.SubElement(case, "failure", message=message.splitlines()[0] if message else "failed").text = message
    elif result == "skipped":
        ET.SubElement(case, "skipped", message=message)
    cases = list(node.iter("testcase"))
    node.set("tests", str(len(cases)))
    node.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    node.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def record(args: list[str]) -> int:
    if len(args) not in (4, 5) or args[3] not in ("passed", "failed", "skipped"):
        print(USAGE, file=sys.stderr)
        return 2
    add_case(Path(args[0]), args[1], args[2], args[3], args[4] if len(args) == 5 else "")
    return 0


def exit_status(args: list[str]) -> int:
    if len(args) != 3 or not args[2].lstrip("-").isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    path, name, status = Path(args[0]), args[1], int(args[2])
    if status == 0:
        return 0
    failed = 0
    if path.is_file():
        try:
            failed = count_junit(path)[1]
        except ET.ParseError:
            path.unlink()  # unreadable: replaced by the record below
    if failed == 0:
        add_case(path, name, f"{name} run", "failed", f"{name} exited with status {status} without reporting a failing test")
    return 0


def main() -> int:
    commands = {"summary": summary, "record": record, "exit-status": exit_status}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(USAGE, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
