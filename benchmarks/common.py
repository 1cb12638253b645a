"""What every benchmark shares: the results file (DESIGN.md section 7) and its table in BENCHMARKS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
from pathlib import Path

from zoo.utils.io import atomic_file

RESULTS_DIR = Path(__file__).parent / "results"
_REPO_RESULTS_DIR = RESULTS_DIR  # figures are drawn for results written here (not for tests' folders)
BENCHMARKS_MD = Path(__file__).parent.parent / "BENCHMARKS.md"


def machine_description(threads: int) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), {threads} threads, torch {torch.__version__}"


def mean_dnsmos(waveforms, sample_rate: int) -> dict:
    """{"dnsmos_ovrl": mean DNSMOS overall of the non-empty waveforms} when speechmos is installed, else {}."""
    from zoo.metrics.audio import dnsmos

    scores = [dnsmos(w, sample_rate) for w in waveforms if len(w)]
    return {} if not scores or None in scores else {"dnsmos_ovrl": sum(scores) / len(scores)}


def claim(text: str, holds: bool, evidence: str) -> dict:
    return {"claim": text, "holds": bool(holds), "evidence": evidence}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, command: str, machine: str, rows: list[dict], claims: list[dict],
                  columns: list[str], quick: bool = False, notes: str = "", results_dir: Path | None = None) -> Path:
    """Write results/<name>.json (or <name>.quick.json) and, for full runs, the BENCHMARKS.md section."""
    result = {"benchmark": name, "command": command, "date": datetime.date.today().isoformat(),
              "machine": machine, "rows": rows, "claims": claims}
    path = Path(results_dir or RESULTS_DIR) / f"{name}{'.quick' if quick else ''}.json"
    with atomic_file(path, "w") as f:
        json.dump(result, f, indent=2)
    if not quick and BENCHMARKS_MD.is_file():
        section = "\n".join([
            f"<!-- --8<-- [start:{name}] -->",
            f"Command: `{command}` ({result['date']}, {machine}).",
            "", markdown_table(rows, columns), "",
            *[f"- {'✅' if c['holds'] else '❌'} {c['claim']}: {c['evidence']}" for c in claims],
            *([""] + [notes] if notes else []),
            f"<!-- --8<-- [end:{name}] -->",
        ])
        text = BENCHMARKS_MD.read_text()
        # the markers are also pymdownx.snippets sections: docs pages include them as "BENCHMARKS.md:<name>"
        pattern = re.compile(rf"<!-- --8<-- \[start:{re.escape(name)}\] -->.*?<!-- --8<-- \[end:{re.escape(name)}\] -->",
                             re.S)
        text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
        with atomic_file(BENCHMARKS_MD, "w") as f:
            f.write(text)
    if not quick and path.parent.resolve() == _REPO_RESULTS_DIR.resolve():
        _draw_figure(result)
    return path


def _draw_figure(result: dict):
    """The documentation's figure of this benchmark (benchmarks/figures.py), when matplotlib is installed."""
    try:
        from benchmarks.figures import draw
    except ImportError as error:  # matplotlib is a [dev] dependency
        print(f"figure not drawn ({error}); pip install matplotlib, then python benchmarks/figures.py")
        return
    path = draw(result)
    if path is not None:
        print(f"figure: {path}")


def report(rows: list[dict], claims: list[dict], path: Path):
    """Print the rows, the claims and where they were written."""
    for row in rows:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    for c in claims:
        print(f"[{'holds' if c['holds'] else 'FAILS'}] {c['claim']}: {c['evidence']}")
    print(f"results: {path}")


def run_launched(main) -> None:
    """Run a benchmark's main() as a script that may run under `accelerate launch`: close the process group
    after a successful run (`zoo.utils.distributed.end_processes`), then exit with main's status."""
    from zoo.utils.distributed import end_processes

    status = main()
    end_processes()
    sys.exit(status)


def timed_training(model, data, loss_fn, config, **train_kwargs) -> dict:
    """Train a copy of `model` with zoo's loop (`zoo.train.loop.train`, its `config` and keyword arguments)
    and read its log back: steps/s is the median of the logged windows after the first (the first holds
    start-up), seconds the time of all steps, final_loss the mean loss of the last window and mean_loss that
    of all steps."""
    import copy
    import statistics

    from accelerate.state import AcceleratorState

    from zoo.train.loop import train

    # accelerate keeps one process-wide state, fixed at its first mixed_precision: each run starts and
    # leaves it unset, so that the next run (or the caller's) can choose its own
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train(copy.deepcopy(model), data, loss_fn, config, **train_kwargs)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    windows = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    speed = statistics.median(w["steps_per_s"] for w in windows[1:]) if len(windows) > 1 else windows[0]["steps_per_s"]
    sizes = [w["step"] - previous for w, previous in zip(windows, [0] + [w["step"] for w in windows])]
    return {"steps_per_s": speed, "s_per_step": 1 / speed, "final_loss": windows[-1]["loss"],
            "seconds": sum(n / w["steps_per_s"] for n, w in zip(sizes, windows)),
            "mean_loss": sum(n * w["loss"] for n, w in zip(sizes, windows)) / windows[-1]["step"]}
