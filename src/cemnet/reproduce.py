"""``cemnet reproduce table1|table2|beyond|fixation``: train every row of a table with one recipe.

``table1`` and ``table2`` are the paper's Tables 1-2. ``beyond`` and
``fixation`` go beyond the paper (their paper columns are blank): the small
CEMNet with a true nonlinearity or a spatial first stage, beside its CNN; and
the small CEMNet under each way of keeping its kernels on their ``K x K`` support.

Each row trains ``seeds`` runs, seed ``s`` into ``OUT/TABLE/ROW/seed-S`` with
:func:`cemnet.training.train`, seed by seed (every row's seed 0 first, then
every row's seed 1, ...); a run that already holds the requested epochs is
read back, not retrained, and an interrupted run resumes. A row reports the
mean and the sample standard deviation of its seeds' final test errors. The
table is written to ``OUT/TABLE/TABLE.md`` and the numbers, each seed's
included, to ``OUT/TABLE/TABLE.json``.

The paper trains 800 epochs per row. On a CPU that is weeks, so runs here use
far fewer (``--epochs``), and the table says how many were run.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cemnet.models import create_model
from cemnet.ops import count_ops
from cemnet.training.checkpoint import read_header


@dataclass(frozen=True)
class Row:
    """One line of a paper table: what to train and what the paper reports."""

    slug: str
    label: str
    paper_error: str
    paper_ops: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


NOT_RUN_2SRELU = ("not run: the definition of its 2SReLU activation is not available to us, and a form guessed "
                  "from its name would not be 2SReLU (docs/results.md)")
FCNN_LABEL = "FCNN [16], its method reconstructed on the CNN's layer plan"
ABLATIONS = {
    "wf-bn-dropout": {"weight_fixation": False, "batch_norm": False, "dropout": False},
    "bn-dropout": {"batch_norm": False, "dropout": False},
    "dropout": {"dropout": False},
}

TABLES: dict[str, list[Row]] = {
    "table1": [
        Row("lenet5", "Modified LeNet-5 (CNN)", "0.72%", "692K / 692K", "lenet5"),
        Row("2srelu", "2SReLU [24]", "3.08%", "N/A", note=NOT_RUN_2SRELU),
        Row("fcnn", FCNN_LABEL, "≈3%", "N/A", "fcnn-mnist"),
        Row("cemnet-wf-bn-dropout", "CEMNet − WF − BN − Dropout", "1.11%", "N/A", "cemnet-mnist",
            ABLATIONS["wf-bn-dropout"]),
        Row("cemnet-bn-dropout", "CEMNet − BN − Dropout", "0.99%", "N/A", "cemnet-mnist", ABLATIONS["bn-dropout"]),
        Row("cemnet-dropout", "CEMNet − Dropout", "0.91%", "N/A", "cemnet-mnist", ABLATIONS["dropout"]),
        Row("cemnet", "CEMNet", "0.67%", "368K / 481K", "cemnet-mnist"),
    ],
    "table2": [
        Row("vgg-small", "Small CNN", "21.07%", "68.10M / 68.10M", "vgg-small"),
        Row("vgg-large", "Large CNN", "11.30%", "275.45M / 275.45M", "vgg-large"),
        Row("fcnn", FCNN_LABEL, "≈73%", "N/A", "fcnn-small"),
        Row("small-wf-bn-dropout", "Small CEMNet − WF − BN − Dropout", "40.67%", "N/A", "cemnet-small",
            ABLATIONS["wf-bn-dropout"]),
        Row("small-bn-dropout", "Small CEMNet − BN − Dropout", "35.11%", "N/A", "cemnet-small",
            ABLATIONS["bn-dropout"]),
        Row("small-dropout", "Small CEMNet − Dropout", "32.83%", "N/A", "cemnet-small", ABLATIONS["dropout"]),
        Row("small-cemnet", "Small CEMNet", "22.40%", "31.33M / 50.17M", "cemnet-small"),
        Row("large-cemnet", "Large CEMNet", "21.63%", "124.39M / 194.28M", "cemnet-large"),
    ],
    "beyond": [
        Row("vgg-small", "Small CNN (`vgg-small`)", "—", "—", "vgg-small"),
        Row("small-cemnet", "Small CEMNet, the paper's (full spectrum)", "—", "—", "cemnet-small"),
        Row("small-half", "Small CEMNet, half spectrum", "—", "—", "cemnet-small", {"half_spectrum": True}),
        Row("small-half-at-pools", "half + real Leaky ReLU at the pools", "—", "—", "cemnet-small",
            {"half_spectrum": True, "nonlinearity": "at-pools"}),
        Row("small-half-every-layer", "half + real Leaky ReLU after every conv (round trips)", "—", "—",
            "cemnet-small", {"half_spectrum": True, "nonlinearity": "every-layer"}),
        Row("small-half-split", "half + Leaky ReLU on real and imaginary parts", "—", "—", "cemnet-small",
            {"half_spectrum": True, "nonlinearity": "split"}),
        Row("small-half-spatial-1", "half + first stage spatial (`spatial_stages=1`)", "—", "—", "cemnet-small",
            {"half_spectrum": True, "spatial_stages": 1}),
    ],
    "fixation": [
        Row("small-half-paper", "Weight Fixation on blocks 1-3 (the paper's choice)", "—", "—", "cemnet-small",
            {"half_spectrum": True}),
        Row("small-half-fix-all", "Weight Fixation on every block", "—", "—", "cemnet-small",
            {"half_spectrum": True, "fixed_stages": 5}),
        Row("small-half-free", "No fixation (−WF)", "—", "—", "cemnet-small",
            {"half_spectrum": True, "weight_fixation": False}),
        Row("small-half-gradient", "Gradient and weight fixation on blocks 1-3", "—", "—", "cemnet-small",
            {"half_spectrum": True, "weight_fixation": "gradient"}),
        Row("small-half-gradient-all", "Gradient and weight fixation on every block", "—", "—", "cemnet-small",
            {"half_spectrum": True, "weight_fixation": "gradient", "fixed_stages": 5}),
        Row("small-half-spatial", "Spatial K x K kernels (storage=spatial: on the support, nothing removed)", "—",
            "—", "cemnet-small", {"half_spectrum": True, "storage": "spatial"}),
    ],
}


def _human(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def _finished(run: Path, epochs: int) -> dict[str, Any] | None:
    """The last metrics of a run that already holds ``epochs`` epochs, else ``None``."""
    last = run / "last.safetensors"
    if not last.is_file():
        return None
    meta = read_header(last)["meta"]
    return meta["metrics"] if meta["epoch"] >= epochs and meta["metrics"] else None


def _training_seconds(run: Path) -> float:
    """Training time of a run, summed over the epochs in its metrics.csv (evaluation excluded)."""
    with (run / "metrics.csv").open() as handle:
        return sum(float(row["epoch_seconds"]) for row in csv.DictReader(handle))


def reproduce(table: str, epochs: int = 800, out: str | Path = "runs/reproduce", seeds: int = 1,
              rows: list[str] | None = None, **train_options) -> str:
    """Train (or read back) ``seeds`` runs of every row of ``table``; write and return the markdown table.

    ``rows`` limits the training to the rows of those names (:attr:`Row.slug`);
    the others are reported as not run. ``train_options`` go to
    :class:`cemnet.training.TrainConfig` (``data_dir``, ``device``, ``limit_train``, ...).
    """
    from cemnet.training import TrainConfig, train

    if table not in TABLES:
        raise ValueError(f"table must be one of {sorted(TABLES)}, got {table!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    known = [row.slug for row in TABLES[table] if row.model is not None]
    unknown = sorted(set(rows or []) - set(known))
    if unknown:
        raise ValueError(f"{table} has no rows {unknown} to train; its rows are {known}")
    out = Path(out) / table
    selected = [row for row in TABLES[table] if row.model is not None and (not rows or row.slug in rows)]
    for seed in range(seeds):  # seed-major: an interrupted table has every row's first seeds
        for row in selected:
            run = out / row.slug / f"seed-{seed}"
            if _finished(run, epochs) is None:  # not run yet, or interrupted: train (resuming where it stopped)
                print(f"== {table}: {row.label} ({row.model}, {row.options or 'defaults'}), seed {seed}, "
                      f"{epochs} epochs", flush=True)
                train(TrainConfig(model=row.model, epochs=epochs, out=str(run), model_options=row.options, seed=seed,
                                  **train_options), resume=(run / "last.safetensors").is_file())
    results = {row.slug: _row_result(row, [out / row.slug / f"seed-{seed}" for seed in range(seeds)], epochs)
               for row in selected}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{table}.json").write_text(json.dumps(results, indent=2))
    markdown = render(table, results)
    (out / f"{table}.md").write_text(markdown)
    return markdown


def _row_result(row: Row, runs: list[Path], epochs: int) -> dict[str, Any]:
    """A row's numbers: each seed's error and training time, their mean and spread, the operation counts."""
    errors = [100 * (1 - _finished(run, epochs)["test_accuracy"]) for run in runs]
    with torch.device("meta"):  # counts need shapes only
        ops = count_ops(create_model(row.model, **row.options))
    return {
        "epochs": epochs, "seeds": len(runs), "errors": errors, "error": statistics.fmean(errors),
        "error_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "seconds": [_training_seconds(run) for run in runs], "forward": ops.forward, "backward": ops.backward,
    }


def render(table: str, results: dict[str, dict[str, Any]]) -> str:
    """The markdown table: the paper's numbers beside ours, one line per paper row."""
    lines = [
        "| method | paper error | our error (mean ± std over seeds) | seeds | epochs (paper: 800) "
        "| paper ops fwd / bwd | our ops fwd / bwd | training time per seed | each seed's error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in TABLES[table]:
        result = results.get(row.slug)
        if result is None:
            lines.append(f"| {row.label} | {row.paper_error} | {row.note or 'not run'} | | | {row.paper_ops} | | | |")
            continue
        error = f"{result['error']:.2f}%"
        if result["error_std"] is not None:
            error += f" ± {result['error_std']:.2f}"
        minutes = statistics.fmean(result["seconds"]) / 60
        lines.append(
            f"| {row.label} | {row.paper_error} | {error} | {result['seeds']} | {result['epochs']} | {row.paper_ops} | "
            f"{_human(result['forward'])} / {_human(result['backward'])} | {minutes:.1f} min | "
            + ", ".join(f"{error:.2f}%" for error in result["errors"]) + " |"
        )
    return "\n".join(lines) + "\n"
