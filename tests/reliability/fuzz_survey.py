"""Survey mode of the reader fuzzer: many cases, every disagreement counted, none stopping the run.

    python -m tests.reliability.fuzz_survey 20000 --seed 20261130 [--corpus golden_v2,closed]
        [--keep /tmp/fuzz-survey]

The fuzz test (``test_fuzz_readers.py``) stops at the first case where the readers disagree and
shrinks it, which is what a regression gate should do. While the two readers are being brought
into line, this script reads every case with both readers (in this process: no per-case RSS check
and no crash isolation, which the fuzz test keeps) and sorts the disagreements by what differs:
the records, and the kinds of skipped parts only one reader reported. One example directory per
kind of disagreement is kept, with its mutation list in ``CASE.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hypothesis.errors import NonInteractiveExampleWarning

from tests.reliability import fuzz_worker
from tests.reliability import test_fuzz_readers as fuzz


def signature(case: tuple[Any, ...], corpus: list[fuzz.Corpus], native: dict[str, Any],
              python: dict[str, Any]) -> tuple[Any, ...] | None:
    """What differs between the readers' outcomes, or None when they agree."""
    if "error" in native or "error" in python:
        if ("error" in native) == ("error" in python):
            return None
        return ("error", native.get("error"), python.get("error"))
    ours = collections.Counter(map(tuple, native["skipped_at"]))
    theirs = collections.Counter(map(tuple, python["skipped_at"]))
    records = native["digest"] != python["digest"]
    if not records and ours == theirs:
        return None
    return ("records" if records else "",
            tuple(sorted({s[2] for s in ours - theirs})),
            tuple(sorted({s[2] for s in theirs - ours})),
            corpus[case[0] % len(corpus)].name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", default="", help="comma-separated corpus directory names")
    parser.add_argument("--keep", default=str(Path(tempfile.gettempdir()) / "fuzz-survey"))
    args = parser.parse_args()
    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    random.seed(args.seed)  # hypothesis draws .example() from the global random state
    root = Path(tempfile.mkdtemp(prefix="fuzz-survey-"))
    corpus = fuzz._write_corpus(root / "corpus")
    names = [n for n in args.corpus.split(",") if n]
    corpus = [c for c in corpus if not names or c.name in names]
    keep = Path(args.keep)
    counts: collections.Counter[tuple[Any, ...]] = collections.Counter()
    examples: dict[tuple[Any, ...], Path] = {}
    start = time.monotonic()
    for k in range(args.cases):
        case = fuzz.CASES.example()
        case_dir = root / "case"
        fuzz.build_case(corpus, case, case_dir)
        sig = signature(case, corpus, fuzz_worker._native(case_dir),
                        fuzz_worker._python(case_dir))
        if sig is not None:
            counts[sig] += 1
            if sig not in examples:
                examples[sig] = keep / f"kind-{len(examples)}"
                shutil.rmtree(examples[sig], ignore_errors=True)
                shutil.copytree(case_dir, examples[sig])
                (examples[sig] / "CASE.json").write_text(json.dumps(case, default=repr))
        if (k + 1) % 1000 == 0:
            print(f"{k + 1} cases, {sum(counts.values())} disagreements, "
                  f"{time.monotonic() - start:.0f} s", flush=True)
    print(f"{args.cases} cases, {sum(counts.values())} disagreements")
    for sig, count in counts.most_common():
        print(f"{count:6d}  {sig}  {examples[sig]}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
