"""Reliability figures: the bad-input catalogue and interrupted reproductions, counted.

Not a test. Example (the figures of docs/reliability.md):

    OMP_NUM_THREADS=1 python benchmarks/reliability.py --examples 25 --chains 2 --json reliability.json

What it runs (the same code as the tests, imported from ``tests/``):

* every case of ``tests/test_bad_input.py``'s table (:data:`CASES`), in-process, and the cases that test also
  runs in a subprocess (their real stderr);
* ``--examples`` random inputs of each hypothesis family of that test (bad numeric values, misspelt keys,
  bad names, NaN/inf and non-positive entries of particle and PDE files, huge values), generation only
  (no shrinking), every one counted;
* ``--faults`` generated cases of each fault class of ``benchmarks/reliability_faults.py`` (issue 24: links
  and special files at write targets, full disks, declared sizes, virtual datasets and external links,
  ``--force`` beside a user's files, YAML/JSON bombs), each ``held`` or ``failed``;
* ``--chains`` interrupt chains of ``tests/test_reproduce_interrupts.py`` (alternately SIGINT and SIGKILL at
  each of its points of a tiny two-arm ``physdiff reproduce``, each followed by ``--resume``), compared with
  one uninterrupted run.

Each input is classified as in the test: ``clean`` (exit 2, exactly one stderr line ``physdiff <verb>: error:
...`` naming what is wrong, no warning, nothing written; argparse's own errors may print its usage block
first, counted apart), ``traceback`` (a Python traceback, or exit 1: an internal error whose traceback went
to a log), ``accepted`` (exit 0: the bad input was taken) or ``unclean`` (exit 2, but an extra line, a
warning, a message that does not name what is wrong, or a file written). Non-clean inputs are split into
known defects (the test's xfail cases, each naming its file) and unexpected ones (which must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

if __name__ == "__main__":  # the hypothesis families' number of examples (read when the test module is imported)
    _n = sys.argv[sys.argv.index("--examples") + 1] if "--examples" in sys.argv else "25"
    os.environ["PHYSDIFF_RELIABILITY_EXAMPLES"] = _n

import test_bad_input as bad  # noqa: E402
import test_reproduce_interrupts as intr  # noqa: E402
from reliability_faults import CLASSES, run_fault_classes  # noqa: E402

#: the hypothesis families of tests/test_bad_input.py
FAMILIES = {
    "config: bad numeric values": "test_random_bad_numeric_values_are_refused_by_key",
    "config: misspelt keys": "test_unknown_keys_are_refused_with_the_closest_key_suggested",
    "config: bad names": "test_random_names_of_samplers_schedules_processes_predictions_are_refused",
    "particles: NaN/inf entries": "test_random_nonfinite_entries_of_particle_files",
    "particles: masses <= 0": "test_random_nonpositive_masses",
    "particles: huge values": "test_random_huge_particle_values",
    "pde: NaN/inf entries": "test_random_nonfinite_entries_of_pde_files",
    "pde: permeability <= 0": "test_random_nonpositive_permeability",
}


def _usage_block(got: bad.Outcome) -> bool:
    return any(line.startswith("usage:") for line in got.stderr)


def run_catalogue(inputs: bad.Inputs, tmp: Path) -> list[dict]:
    """Every table case, the subprocess cases and ``--examples`` draws of each hypothesis family."""
    records: list[dict] = []
    for case in bad.CASES:
        with tempfile.TemporaryDirectory(dir=tmp) as d:
            got = bad.run_case(case, Path(d), inputs)
        kind, detail = bad.verdict(case, got)
        records.append(
            {
                "family": case.family,
                "name": case.name,
                "how": "in-process",
                "kind": kind,
                "usage_block": _usage_block(got),
                "defect": case.defect,
                "seconds": round(got.seconds, 3),
                "detail": None if kind == "clean" else detail[:400],
            }
        )
    for name in bad.SUBPROCESS_CASES:
        (case,) = [c for c in bad.CASES if c.id == name]
        with tempfile.TemporaryDirectory(dir=tmp) as d:
            got = bad.run_subprocess(case, Path(d), inputs)
        kind, detail = bad.verdict(case, got)
        records.append(
            {
                "family": case.family,
                "name": case.name,
                "how": "subprocess",
                "kind": kind,
                "usage_block": _usage_block(got),
                "defect": case.defect,
                "detail": None if kind == "clean" else detail[:400],
            }
        )

    original = bad._in_tmp
    for family, test_name in FAMILIES.items():

        def recording(inputs_, build, expect, name, family=family):
            case = bad.Case(family.split(":")[0], name, build, expect)
            with tempfile.TemporaryDirectory(dir=tmp) as d:
                got = bad.run_case(case, Path(d), inputs_)
            kind, detail = bad.verdict(case, got)
            records.append(
                {
                    "family": case.family,
                    "name": f"{family}: {name}",
                    "how": "hypothesis",
                    "kind": kind,
                    "usage_block": _usage_block(got),
                    "defect": None,
                    "detail": None if kind == "clean" else detail[:400],
                }
            )
            return kind, detail

        bad._in_tmp = recording
        try:
            getattr(bad, test_name)(inputs=inputs)
        except Exception as e:  # noqa: BLE001 - a failing example is already recorded as non-clean
            print(f"  {family}: stopped at a failing example ({type(e).__name__})", file=sys.stderr)
        finally:
            bad._in_tmp = original
    return records


def run_chains(n: int, tmp: Path) -> list[dict]:
    """``n`` interrupt chains (SIGINT, SIGKILL, SIGINT, ...) against one uninterrupted run."""
    z = intr.Zygote(tmp)
    try:
        reference = tmp / "reference" / "res"
        reference.parent.mkdir()
        z.start(intr.argv(reference, resume=False), reference.parent / "reference.log")
        assert z.wait() == 0, (reference.parent / "reference.log").read_text()[-3000:]
        chains = []
        for i in range(n):
            sig = (signal.SIGINT, signal.SIGKILL)[i % 2]
            out = tmp / f"chain{i}" / "res"
            out.parent.mkdir()
            t0 = time.perf_counter()
            chain = intr.interrupt_chain(z, out, sig)
            diffs = intr.compare(reference, out)
            expected = 130 if sig == signal.SIGINT else -int(signal.SIGKILL)
            chains.append(
                {
                    "signal": sig.name,
                    "segments": [vars(s) for s in chain.segments],
                    "interrupted": sum(s.exit_code == expected for s in chain.segments),
                    "final_exit": chain.final_exit,
                    "results_identical": not [d for d in diffs if not d.endswith("validation.csv")],
                    "validation_csv_identical": not [d for d in diffs if d.endswith("validation.csv")],
                    "differences": diffs,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
        return chains
    finally:
        z.close()


def summarise(records: list[dict], chains: list[dict]) -> dict:
    kinds = Counter(r["kind"] for r in records)
    not_clean = [r for r in records if r["kind"] != "clean"]
    known = [r for r in not_clean if r["defect"]]
    unexpected = [r for r in not_clean if not r["defect"]]
    per_family = {}
    for fam in sorted({r["family"] for r in records}):
        rs = [r for r in records if r["family"] == fam]
        per_family[fam] = {"tried": len(rs), **Counter(r["kind"] for r in rs)}
    segments = [s for c in chains for s in c["segments"]]
    survived = sum(c["interrupted"] for c in chains if c["results_identical"] and c["final_exit"] == 0)
    return {
        "inputs_tried": len(records),
        "clean_errors": kinds["clean"],
        "clean_with_argparse_usage_block": sum(r["kind"] == "clean" and r["usage_block"] for r in records),
        "tracebacks": kinds["traceback"],
        "wrongly_accepted": kinds["accepted"],
        "unclean_other": kinds["unclean"],
        "known_defects": len(known),
        "unexpected": len(unexpected),
        "per_family": per_family,
        "interrupts_sent": len(segments),
        "interrupts_survived": survived,
        "chains_with_identical_results": sum(c["results_identical"] for c in chains),
        "chains_with_identical_validation_csv": sum(c["validation_csv_identical"] for c in chains),
        "chains": len(chains),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=25, help="inputs drawn per hypothesis family")
    p.add_argument("--chains", type=int, default=2, help="interrupt chains (alternately SIGINT and SIGKILL)")
    p.add_argument("--faults", type=int, default=25, help="generated cases per fault class (0: none)")
    p.add_argument("--json", default=None, help="write every record and the summary to this file")
    a = p.parse_args()
    command = shlex.join(["python", "benchmarks/reliability.py", *sys.argv[1:]])
    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="physdiff-reliability-") as d:
        tmp = Path(d)
        with contextlib.redirect_stdout(io.StringIO()):
            inputs = bad.make_inputs(tmp / "inputs")
        records = run_catalogue(inputs, tmp)
        catalogue_s = time.perf_counter() - t0
        chains = run_chains(a.chains, tmp) if a.chains else []
    t1 = time.perf_counter()
    faults = run_fault_classes(a.faults) if a.faults else []
    faults_s = time.perf_counter() - t1
    total_s = time.perf_counter() - t0
    summary = summarise(records, chains)
    summary["fault_classes"] = {
        c: {"tried": sum(r["class"] == c for r in faults), "held": sum(r["class"] == c and r["held"] for r in faults)}
        for c in CLASSES
    }
    machine = {
        "date": started.isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "catalogue_s": round(catalogue_s, 1),
        "fault_classes_s": round(faults_s, 1),
        "total_s": round(total_s, 1),
    }
    print(f"command: {command}")
    print(
        f"date: {machine['date']}  cpus: {machine['cpus']}  load average (1, 5, 15 min) before: "
        f"{machine['load_average_before']}, after: {machine['load_average_after']}"
    )
    print(f"time: catalogue {machine['catalogue_s']} s, total {machine['total_s']} s")
    print()
    print(f"bad inputs tried:              {summary['inputs_tried']}")
    print(
        f"clean errors (one line, exit 2): {summary['clean_errors']} "
        f"(of which {summary['clean_with_argparse_usage_block']} argparse errors after its usage block)"
    )
    print(f"tracebacks / internal errors:  {summary['tracebacks']}")
    print(f"wrongly accepted:              {summary['wrongly_accepted']}")
    print(f"other unclean (wrote files, extra lines, vague message): {summary['unclean_other']}")
    print(f"  of the non-clean: known defects {summary['known_defects']}, unexpected {summary['unexpected']}")
    print()
    print("per family:")
    for fam, c in summary["per_family"].items():
        rest = ", ".join(f"{k} {v}" for k, v in c.items() if k != "tried")
        print(f"  {fam:10s} tried {c['tried']:4d}: {rest}")
    if chains:
        print()
        print(
            f"interrupts sent: {summary['interrupts_sent']} in {summary['chains']} chains; survived with identical "
            f"results: {summary['interrupts_survived']}; chains with identical results.json/metrics/samples/"
            f"weights: {summary['chains_with_identical_results']}/{summary['chains']}; identical validation.csv: "
            f"{summary['chains_with_identical_validation_csv']}/{summary['chains']}"
        )
        for c in chains:
            print(
                f"  {c['signal']}: {c['interrupted']}/{len(c['segments'])} segments ended by the signal, final "
                f"exit {c['final_exit']}, {c['seconds']} s; differences: {c['differences'] or 'none'}"
            )
    if faults:
        print()
        print(f"fault classes ({a.faults} generated cases each, {machine['fault_classes_s']} s):")
        for c, v in summary["fault_classes"].items():
            print(f"  {c:30s} tried {v['tried']:4d}, held {v['held']:4d}")
        for r in faults:
            if not r["held"]:
                print(f"  FAILED {r['class']}: {r['case']}: {r['reason']}")
    print()
    print("non-clean inputs:")
    for r in records:
        if r["kind"] != "clean":
            tag = "known defect" if r["defect"] else "UNEXPECTED"
            print(f"  [{r['kind']}, {tag}] {r['family']}/{r['name']} ({r['how']})")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine,
                    "summary": summary,
                    "records": records,
                    "chains": chains,
                    "faults": faults,
                },
                indent=2,
            )
        )
        print(f"\nwrote {a.json}")
    failed = sum(not r["held"] for r in faults)
    return 0 if summary["unexpected"] == 0 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
