"""One self-contained HTML page for run and study directories (docs/architecture.md, "Conventions").

A run section is drawn from the files every run writes (config.yaml, metrics.jsonl,
results.json); a study section from study.json and its summary CSV/PNG. Figures are
embedded as base64 PNGs, so the page can be mailed or opened offline as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from fedtosc.results import plot_accuracy_vs_snr  # importing it selects matplotlib's headless Agg backend

__all__ = ["read_metrics", "render_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.4em; } table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; } th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .8em; } .note { color: #555; font-size: .9em; }
.grid { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; } .grid img { max-width: 560px; }
"""


def render_report(directories: list[Path], output: Path) -> Path:
    """Write one HTML page with a section per run or study directory; returns `output`."""
    sections = [_study_section(d) if (d / "study.json").is_file() else _run_section(d) for d in directories]
    title = "fedtosc report: " + ", ".join(d.name for d in directories)
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page)
    return output


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of round records; an unfinished last line (run still writing) is dropped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _run_section(run_dir: Path) -> str:
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is neither a run directory (config.yaml) nor a study (study.json)")
    metrics = read_metrics(run_dir)
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    parts = [f"<h2>Run {_e(run_dir.name)}</h2><p class='note'>{_e(str(run_dir.resolve()))}</p>"]
    if results is None:
        parts.append("<p><b>results.json is missing</b>: the run is unfinished or failed; showing what it has recorded.</p>")
    parts.append(_summary_table(OmegaConf.load(run_dir / "config.yaml"), results, metrics))
    if metrics:
        parts.append("<h3>Per-round curves</h3>" + _img(_round_curves(metrics)))
    else:
        parts.append("<p>metrics.jsonl holds no rounds yet.</p>")
    if results is not None:
        parts.append("<h3>Accuracy vs SNR</h3><div class='grid'>" + _img(_accuracy_vs_snr(results)) + _snr_table(results) + "</div>")
        parts.append(_clients_part(results, metrics))
        parts.append("<div class='grid'><div><h3>Size and latency</h3>" + _size_table(results) + "</div>")
        parts.append("<div><h3>Knowledge store</h3>" + _knowledge_table(results) + "</div></div>")
    parts.append(f"<h3>Config</h3><details><summary>config.yaml</summary><pre>{_e((run_dir / 'config.yaml').read_text())}</pre></details>")
    return "<section>" + "\n".join(parts) + "</section>"


def _study_section(study_dir: Path) -> str:
    study = json.loads((study_dir / "study.json").read_text())
    cells = study.get("cells", [])
    counts = ", ".join(f"{sum(c['status'] == s for c in cells)} {s}" for s in ("ran", "skipped", "failed"))
    parts = [
        f"<h2>Study {_e(study['study'])}: {_e(study_dir.name)}</h2><p class='note'>{_e(str(study_dir.resolve()))}</p>",
        _table([("overrides", " ".join(study.get("overrides", [])) or "(study defaults)"),
                ("cells", f"{len(cells)} ({counts} in the last invocation)"),
                ("cell runs", "fedtosc train (centralized)" if study.get("centralized") else "fedtosc run (federated)")]),
    ]
    for figure in sorted(study_dir.glob("*.png")):
        parts.append(f"<h3>{_e(figure.name)}</h3>" + _img(figure.read_bytes()))
    for table in sorted(study_dir.glob("*.csv")):
        with table.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        parts.append(f"<h3>{_e(table.name)}</h3>" + _rows_table(rows))
    parts.append("<h3>Cells</h3>" + _rows_table([
        {"cell": c["name"], "status": c["status"], "seconds": f"{c['seconds']:.0f}", "message": c.get("message", "")} for c in cells
    ]))
    parts.append("<p class='note'>Each cell is a run directory under cells/; <code>fedtosc report</code> on it shows its rounds.</p>")
    return "<section>" + "\n".join(parts) + "</section>"


def _summary_table(config: Any, results: dict[str, Any] | None, metrics: list[dict[str, Any]]) -> str:
    federation = (results or {}).get("federation", {})
    pairs = [
        ("method", config.method),
        ("mode", federation.get("mode", "federated")),
        ("dataset", f"{config.dataset.name}, label fraction {config.dataset.label_fraction:g}"),
        ("clients", f"{config.federation.num_clients}: {config.channel.clients}"),
        ("rounds recorded", f"{len(metrics)} of {config.federation.rounds} ({config.strategy.name})"),
    ]
    if metrics:
        last = metrics[-1]
        pairs.append(("final test accuracy", f"{last['test_accuracy']:.3f} (AWGN {last['test_snr_db']:g} dB)"))
    if results is not None:
        pairs.append(("wall time", f"{results.get('wall_seconds', float('nan')):.1f} s"))
    return _table(pairs)


def _round_curves(metrics: list[dict[str, Any]]) -> bytes:
    rounds = [m["round"] for m in metrics]
    figure, (accuracy, loss, traffic) = plt.subplots(1, 3, figsize=(13, 3.6))
    accuracy.plot(rounds, [m["test_accuracy"] for m in metrics], marker="o", label=f"test (AWGN {metrics[-1]['test_snr_db']:g} dB)")
    accuracy.plot(rounds, [m.get("train_accuracy") for m in metrics], marker="s", label="clients' training (mean)")
    accuracy.set(xlabel="round", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    loss.plot(rounds, [m.get("train_loss") for m in metrics], marker="o", color="tab:red")
    loss.set(xlabel="round", ylabel="loss", title="clients' training loss (mean)")
    for key, label in (("bytes_down", "server to clients"), ("bytes_up", "clients to server")):
        total, cumulative = 0.0, []
        for m in metrics:
            total += m.get(key, 0) / 1e6
            cumulative.append(total)
        traffic.plot(rounds, cumulative, marker="o", label=label)
    traffic.set(xlabel="round", ylabel="MB (cumulative)", title="traffic")
    for panel in (accuracy, loss, traffic):
        panel.grid(alpha=0.3)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy.legend(fontsize=8)
    traffic.legend(fontsize=8)
    return _png(figure)


def _accuracy_vs_snr(results: dict[str, Any]) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "accuracy_vs_snr.png"
        plot_accuracy_vs_snr(results, path)
        return path.read_bytes()


def _snr_table(results: dict[str, Any]) -> str:
    curves = results["accuracy_vs_snr"]
    snrs = sorted({snr for curve in curves.values() for snr in curve}, key=float)
    uses = results.get("channel_uses", {})
    rows = [{"SNR (dB)": f"{float(s):g}", **{c: _fmt(curves[c].get(s)) for c in curves}, "channel uses": f"{uses[s]:g}" if s in uses else ""} for s in snrs]
    return "<div>" + _rows_table(rows) + "</div>"


def _clients_part(results: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """Each client's own training accuracy against its nominal SNR: the only per-client figure recorded."""
    if not metrics or not metrics[-1].get("clients"):
        return "<h3>Clients</h3><p>No per-client metrics were recorded.</p>"
    federation = results["federation"]
    snr_db = federation["client_snr_db"]
    profiles = federation.get("client_channel_profiles", {})
    last = sorted(metrics[-1]["clients"], key=lambda c: c["partition-id"])
    history: dict[int, list[float]] = {}
    for record in metrics:
        for client in record.get("clients", []):
            history.setdefault(client["partition-id"], []).append(client.get("train_accuracy", float("nan")))
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    xs = [snr_db[c["partition-id"]] for c in last]
    axes.scatter(xs, [c.get("train_accuracy") for c in last], s=50, label=f"round {metrics[-1]['round']}")
    axes.scatter(xs, [sum(history[c["partition-id"]]) / len(history[c["partition-id"]]) for c in last],
                 s=50, facecolors="none", edgecolors="tab:orange", label="mean over rounds")
    for x, client in zip(xs, last, strict=True):
        axes.annotate(str(client["partition-id"]), (x, client.get("train_accuracy", 0)), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set(xlabel="client's nominal SNR (dB)", ylabel="local training accuracy", ylim=(0, 1.02), title="clients")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    rows = [
        {
            "partition": c["partition-id"], "channel profile": profiles.get(str(c["partition-id"]), "?"),
            "nominal SNR (dB)": f"{snr_db[c['partition-id']]:g}", "examples": c.get("num-examples", "?"),
            "train accuracy": _fmt(c.get("train_accuracy")), "train loss": _fmt(c.get("train_total")),
        }
        for c in last
    ]
    note = (
        "<p class='note'>Per-client accuracy here is each client's <b>training</b> accuracy on its own partition, "
        "through its own channel, as it reported during local training (metrics.jsonl); it is not a held-out test "
        "accuracy. The SNR is the client's nominal SNR from results.json (the mean for uniform or Gauss-Markov profiles).</p>"
    )
    return "<h3>Clients</h3>" + note + "<div class='grid'>" + _img(_png(figure)) + "<div>" + _rows_table(rows) + "</div></div>"


def _size_table(results: dict[str, Any]) -> str:
    teacher, student = results["teacher"], results["student"]
    return _table([
        ("teacher", f"{teacher['name']}: {teacher['params']:,} params, accuracy {teacher['accuracy']:.3f}"),
        ("student params (all)", f"{student['params']:,}"),
        ("student params on device (encoder)", f"{student['encoder_params']:,}"),
        ("teacher / student params", f"{teacher['params'] / max(student['params'], 1):.1f}x"),
        ("encoder latency, batch 1", f"{student['encoder_latency_ms_batch1']:.2f} ms"),
    ])


def _knowledge_table(results: dict[str, Any]) -> str:
    knowledge = results["knowledge"]
    store_bytes = knowledge["bytes_per_sample"] * knowledge["num_samples"]
    return _table([
        ("mode", knowledge["mode"]),
        ("codec", f"{knowledge['codec']} {json.dumps(knowledge.get('codec_params', {}), sort_keys=True)}"),
        ("views per sample", knowledge.get("views", 1)),  # runs recorded before views had one
        ("bytes per sample", f"{knowledge['bytes_per_sample']:.1f}"),
        ("samples", f"{knowledge['num_samples']:,}"),
        ("store size", _bytes(store_bytes)),
        ("build time", f"{knowledge['build_seconds']:.1f} s"),
        ("broadcast to clients", _bytes(knowledge["broadcast_bytes"])),
    ])


def _table(pairs: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in pairs)
    return f"<table>{body}</table>"


def _rows_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    text = str(value)
    try:
        float(text)
        return f"<td class='num'>{_e(text)}</td>"
    except ValueError:
        return f"<td>{_e(text)}</td>"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit} ({int(count):,} B)"
    return f"{int(count):,} B"


def _png(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _img(png: bytes) -> str:
    return f"<img alt='figure' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
