"""Benchmark figures for the documentation: docs/figures/<name>.png, drawn from results/<name>.json.

Every full benchmark run redraws its figure (`write_results` calls `draw`); to redraw all of them from
the committed results:

    python benchmarks/figures.py            # every results/*.json with a figure
    python benchmarks/figures.py ctf vat    # some of them

Each figure shows what its benchmark claims: speed against quality for CTF, distilled decoding and
Token-Shuffle, quality against tokens for FlexTok, F-score against compression for VAT, WER against
bitrate for the codec, and the engine's tokens/s against HF `generate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zoo.utils.io import atomic_path

RESULTS_DIR = Path(__file__).parent / "results"
FIGURES_DIR = Path(__file__).resolve().parent.parent / "docs" / "figures"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _log(ax, *axes):
    """Log scale on the given axes ("x", "y") with plain number labels (1, 2, 5, 10, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        getattr(ax, f"set_{name}scale")("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _system_rows(rows, *keys):
    """The rows that have every one of `keys` (measured systems, not reference rows)."""
    return [r for r in rows if all(r.get(k) is not None for k in keys)]


def _scatter(ax, rows, x, y):
    """One marker per row, named in the legend (labels beside points overlap when points crowd)."""
    markers = "osD^v<>Ph*X"
    for i, r in enumerate(rows):
        label = r["system"] + (f" (cfg {r['cfg']:g})" if r.get("cfg") is not None else "")
        ax.scatter(r[x], r[y], s=45, marker=markers[i % len(markers)], label=label)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))


def ar_engine(result, plt):
    rows = [r for r in result["rows"] if not r["system"].startswith("memory-bandwidth")]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * len(rows)))  # room for two-line labels
    labels = [f"{r['system']}\nbatch {r['batch']} ({r['model_rows']} rows)" for r in rows]
    ax.barh(range(len(rows)), [r["tokens_per_s"] for r in rows],
            color=["tab:green" if r["system"].startswith("zoo") else "tab:gray" for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    _log(ax, "x")
    ax.set_xlabel("new tokens per second (log scale)")
    ax.set_title("AR engine: zoo (green) vs HF generate and a no-cache loop")
    return fig


def c2i(result, plt):
    samples = _system_rows(result["rows"], "cfg")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    cfg = [r["cfg"] for r in samples]
    for top_k in dict.fromkeys(r.get("top_k", 0) for r in samples):  # one line per top-k, in row order
        line = [r for r in samples if r.get("top_k", 0) == top_k]
        label = f"top-k {top_k or 'off'}"
        left.plot([r["cfg"] for r in line], [r["shapes_fid"] for r in line], "o-", label=label)
        right.plot([r["cfg"] for r in line], [100 * r["class_accuracy"] for r in line], "o-", label=label)
    left.legend(fontsize=7)
    for r in result["rows"]:
        if "cfg" not in r:
            left.axhline(r["shapes_fid"], ls="--", lw=1, color="gray")
            right.axhline(100 * r["class_accuracy"], ls="--", lw=1, color="gray")
            right.annotate(r["system"], (cfg[0], 100 * r["class_accuracy"]), fontsize=7, va="bottom")
    left.set(xlabel="CFG scale", ylabel="Shapes-FID (lower is better)")
    right.set(xlabel="CFG scale", ylabel="class accuracy (%)")
    _log(left, "x")
    _log(right, "x")
    fig.suptitle("llamagen-shapes samples (dashed: real images and tokenizer reconstructions)", fontsize=9)
    return fig


def _speed_quality(result, plt, title, speed_key="images_per_s"):
    rows = _system_rows(result["rows"], speed_key, "shapes_fid")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    _scatter(ax, rows, speed_key, "shapes_fid")
    ax.set(xlabel="images per second (higher is better)", ylabel="Shapes-FID (lower is better)", title=title)
    _log(ax, "x", "y")
    return fig


def ctf(result, plt):
    return _speed_quality(result, plt, "CTF vs the plain AR baseline, and the ablations")


def distilled(result, plt):
    return _speed_quality(result, plt, "Distilled decoding: speed against quality")


def token_shuffle(result, plt):
    return _speed_quality(result, plt, "Token-Shuffle windows s = 1, 2, 4 at 128 px")


def codec(result, plt):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    systems: dict[str, list] = {}
    for r in _system_rows(result["rows"], "codebooks", "wer"):
        systems.setdefault(r["system"], []).append(r)
    for name, rows in systems.items():
        ax.plot([r["bitrate_bps"] for r in rows], [100 * r["wer"] for r in rows], "o-", label=name)
    for r in result["rows"]:
        if r["system"] == "original audio":
            ax.axhline(100 * r["wer"], ls="--", color="gray", label="original audio")
    ax.set(xlabel="bitrate (bits per second)", ylabel="recogniser WER (%)",
           title="Speech codec: intelligibility against bitrate")
    _log(ax, "x")
    ax.legend(fontsize=7)
    return fig


def tts(result, plt):
    rows = _system_rows(result["rows"], "rtf", "wer")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    _scatter(ax, [{**r, "wer_pct": 100 * r["wer"]} for r in rows], "rtf", "wer_pct")
    for r in result["rows"]:
        if "rtf" not in r and "wer" in r:
            ax.axhline(100 * r["wer"], ls="--", color="gray")
    ax.set(xlabel="real-time factor (lower is faster)", ylabel="recogniser WER (%)",
           title="Text to speech: speed against intelligibility (dashed: espeak-ng originals)")
    _log(ax, "x")
    return fig


def flextok(result, plt):
    recon = _system_rows(result["rows"], "tokens", "psnr_db")
    generated = _system_rows(result["rows"], "tokens", "images_per_s")
    fig, axes = plt.subplots(1, 3 if generated else 2, figsize=(10 if generated else 7, 3.2))
    k = [r["tokens"] for r in recon]
    axes[0].plot(k, [r["psnr_db"] for r in recon], "o-")
    axes[0].set(xlabel="tokens k", ylabel="reconstruction PSNR (dB)")
    axes[1].plot(k, [r["shapes_rfid"] for r in recon], "o-")
    axes[1].set(xlabel="tokens k", ylabel="Shapes-rFID (lower is better)")
    for r in result["rows"]:  # the VAE's own reconstructions: the ceiling
        if r.get("tokens") is None and r.get("psnr_db") is not None:
            axes[0].axhline(r["psnr_db"], ls="--", color="gray")
            axes[1].axhline(r["shapes_rfid"], ls="--", color="gray")
    if generated:
        axes[2].plot([r["tokens"] for r in generated], [r["shapes_fid"] for r in generated], "o-")
        axes[2].set(xlabel="tokens k", ylabel="AR samples: Shapes-FID")
    for ax in axes:
        _log(ax, "x")
    fig.suptitle("FlexTok: quality against the number of 1D tokens (dashed: the VAE's own reconstructions)",
                 fontsize=9)
    return fig


def vat(result, plt):
    rows = _system_rows(result["rows"], "compression", "fscore@0.02")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["compression"] for r in rows], [100 * r["fscore@0.02"] for r in rows], "o-", label="F-score@0.02")
    ax.plot([r["compression"] for r in rows], [100 * r["fscore@0.01"] for r in rows], "s--", label="F-score@0.01")
    for r in rows:
        ax.annotate(f"{r['tokens']} tokens", (r["compression"], 100 * r["fscore@0.02"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set(xlabel="compression against the mesh file (x, log scale)", ylabel="F-score (%)",
           title="VAT: reconstruction against compression")
    _log(ax, "x")
    ax.legend(fontsize=8)
    return fig


DRAW = {"ar_engine": ar_engine, "c2i": c2i, "ctf": ctf, "distilled": distilled, "token_shuffle": token_shuffle,
        "codec": codec, "tts": tts, "flextok": flextok, "vat": vat}


def draw(result: dict, figures_dir: Path | None = None) -> Path | None:
    """Draw the figure of one benchmark result (a results JSON as a dict); returns its path, or None for
    benchmarks without a figure."""
    name = result.get("benchmark")
    if name not in DRAW:
        return None
    plt = _pyplot()
    fig = DRAW[name](result, plt)
    command = result["command"] if len(result["command"]) <= 110 else result["command"][:107] + "..."
    fig.text(0.01, 0.005, f"{command}  ({result['date']}, {result['machine']})", fontsize=5, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(figures_dir or FIGURES_DIR) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or sorted(DRAW)
    unknown = sorted(set(names) - set(DRAW))
    if unknown:
        raise SystemExit(f"no figure for {unknown}; pass some of {sorted(DRAW)}.")
    for name in names:
        path = RESULTS_DIR / f"{name}.json"
        if path.is_file():
            print(f"{draw(json.loads(path.read_text()))}")
        else:
            print(f"{path} does not exist yet (run the benchmark first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
