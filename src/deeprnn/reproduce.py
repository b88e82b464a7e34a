"""``deeprnn reproduce``: run the paper's experiments from the committed configs and write its
tables beside ours (JSON, Markdown) with learning curves (PNG).

Runs live in ``OUT/runs/<data>/<model>``: a finished run (``results.json``) is skipped, an
interrupted one resumed, so the command can be stopped and started again at will; a run that
stopped at its time budget (or epochs, or updates) carries on when ``--set`` raises that limit,
so a long table can be trained across several sittings. Layer-wise
pretraining follows the paper: sRNN starts from the RNN run, DOT(S)-RNN from the DT(S)-RNN run
(trained, or carried to its end, first when ``OUT`` has none).
Where the paper's RNN and sRNN differ in width (Nottingham and PTB characters: 600 units
against 400; JSB and PTB words: 200 against 400), the sRNN starts instead from an RNN of its
own width, trained for it with the RNN's recipe in ``OUT/runs/<data>/rnn-<width>``, as the
paper must have done. A model whose config has a ``[pretraining]`` table starts instead, at any
width, from a source trained for it there under the table's settings: its row keeps the source
it was made from when the source's own config moves on.
``pretraining=False`` (``--no-pretraining``) starts both from scratch.
A config with a ``[finetune]`` table (deeprnn.training.config) has a second stage, trained from
the first once it has finished, in ``OUT/runs/<data>/<model>-finetune``; the table's row is then
the second stage's, its seconds, epochs and updates those of both. Pretraining always starts from
a first stage. A finished second stage is not redone when a first one is carried on.
Runs are not committed, so a cell with no run under ``OUT`` keeps its row (and learning curve)
from the table already in ``OUT``: one cell can be rerun in a fresh checkout. ``tables`` (``--tables
DIR``) writes the tables into another folder instead, over the tables there: the rows of the runs
under ``OUT`` land in a committed ``results/`` and its other rows stay.
"""

from __future__ import annotations

import json
from pathlib import Path

from deeprnn.errors import UserError
from deeprnn.io import write_atomic, write_json, write_text
from deeprnn.names import TABLES, file_name
from deeprnn.presets import preset
from deeprnn.training.config import (
    LIMITS,
    TrainConfig,
    finetune_table,
    limit_reached,
    parse_sets,
    pretraining_config,
    pretraining_table,
    recipe_differences,
    resolve,
    with_limits,
)
from deeprnn.training.console import Log
from deeprnn.training.distributed import from_environment
from deeprnn.training.run_folder import newest_checkpoint

# docs/paper.md §3, test set; None where the paper has no number.
PAPER = {
    "nottingham": {"rnn": 3.225, "dts-rnn": 3.206, "dots-rnn": 3.215, "srnn": 3.258, "dots-rnn*": 2.95},
    "jsb": {"rnn": 8.338, "dts-rnn": 8.278, "dots-rnn": 8.437, "srnn": 8.367, "dots-rnn*": 7.92},
    "musedata": {"rnn": 6.990, "dts-rnn": 6.988, "dots-rnn": 6.973, "srnn": 6.954, "dots-rnn*": 6.59},
    "ptb-char": {"rnn": 1.414, "dts-rnn": 1.409, "dots-rnn": 1.386, "srnn": 1.412},
    "ptb-word": {"rnn": 117.7, "dts-rnn": 112.0, "dots-rnn": 107.5, "srnn": 110.0},
}
# music-nade: every row against RNN-NADE (Boulanger-Lewandowski et al., 2012), the number to beat
# (docs/paper.md §5).
RNN_NADE = {"nottingham": 2.31, "jsb": 5.56, "musedata": 5.60, "piano-midi": 7.05}


def paper_value(data: str, model: str) -> float | None:
    """The published number a row is compared with: the paper's, or RNN-NADE's for a NADE ▷."""
    if model in TABLES["music-nade"].models:
        return RNN_NADE.get(data)
    return PAPER.get(data, {}).get(model)


PRETRAINED_FROM = {"srnn": "rnn", "dots-rnn": "dts-rnn", "dots-rnn-nade": "dts-rnn-nade"}


def run_dir(out: Path, data: str, model: str) -> Path:
    return out / "runs" / data / file_name(model)


def finetune_dir(first: Path) -> Path:
    """Where the second stage of the run in ``first`` trains."""
    return first.with_name(f"{first.name}-finetune")


def models_of(table: str, models: list[str]) -> list[str]:
    """The models of ``table`` among ``models``; in ``music-nade``, a ⊕ named alone (``dts-rnn``)
    means its row there (``dts-rnn-nade``)."""
    known = TABLES[table].models
    return [m if m in known else f"{m}-nade" for m in models if m in known or f"{m}-nade" in known]


def cells(table: str, models: list[str] | None, datas: list[str] | None) -> list[tuple[str, str]]:
    """(data, model) pairs in training order: pretraining runs before the runs that use them."""
    known = TABLES[table].models
    wanted = models_of(table, models) if models else list(known)
    order = sorted(wanted, key=lambda m: (m in PRETRAINED_FROM, known.index(m) if m in known else 99))
    return [(d, m) for d in (datas or TABLES[table].data) for m in order]


def run_cell(
    out: Path,
    data: str,
    model: str,
    data_dir: str | None,
    sets: list[str],
    log: Log,
    pretraining: bool = True,
) -> dict:
    """Train ``model`` on ``data`` in its folder under ``out``, or resume it, or skip it if done."""
    folder = run_dir(out, data, model)
    extra = list(sets)
    source = PRETRAINED_FROM.get(model) if pretraining else None
    if source and not started(folder):
        width, table = hidden_size(model, data, sets), pretraining_table(model, data)
        if hidden_size(source, data, sets) == width and table is None:  # the source's own row, whole
            run_cell(out, data, source, data_dir, sets, log)  # (skipped when done): its table row is complete
            extra.append(f"init_from={run_dir(out, data, source)}")
        else:  # a source trained for the model: of its width, under its [pretraining] table
            own_source = run_dir(out, data, f"{source}-{width}")
            config = pretraining_config(model, source, data, width, sets)
            train_folder(own_source, config, data_dir, not_in(table, sets), log)
            extra.append(f"init_from={own_source}")
    result = train_folder(folder, resolve(model, data, sets=extra), data_dir, sets, log)
    table = finetune_table(model, data)
    if table is None:
        return result
    own = not_in(table, sets)
    config = resolve(model, data, sets=[*own, f"init_from={folder}"], finetune=True)
    return train_folder(finetune_dir(folder), config, data_dir, own, log)


def not_in(table: dict | None, sets: list[str]) -> list[str]:
    """The ``--set`` settings that a config's table does not set: the table's win, its length
    limits included when a finished run is carried on."""
    return [s for s in sets if parse_sets([s]).keys().isdisjoint(table or {})]


def started(folder: Path) -> bool:
    """Whether a run in ``folder`` has finished or saved a checkpoint to resume from."""
    return (folder / "results.json").exists() or newest_checkpoint(folder) is not None


def hidden_size(model: str, data: str, sets: list[str]) -> int:
    """The width ``model`` trains with on ``data``: its config's, else the paper's (the preset's)."""
    return resolve(model, data, sets=sets).architecture.get("hidden_size") or preset(model, data).hidden_size


def train_folder(folder: Path, config: TrainConfig, data_dir: str | None, sets: list[str], log: Log) -> dict:
    """Train ``config`` in ``folder``; a finished run is skipped unless ``sets`` raise its limits,
    an interrupted one resumed, each with its own settings: the log names those where ``config``
    now differs, so that a row made under other settings is not kept silently as the config's."""
    from deeprnn.training.trainer import train

    name = f"{folder.parent.name}/{folder.name}"
    limits = {k: v for k, v in parse_sets(sets).items() if k in LIMITS}
    kept = kept_settings(folder, name, config, limits, log) if started(folder) else config
    if (folder / "results.json").exists():
        done = json.loads((folder / "results.json").read_text())
        if done.get("stop_reason") == "diverged":
            raise UserError(
                f"{name} diverged ({done.get('message', '')}); change its settings, or remove {folder}"
            )
        if limit_reached(kept, done["stop_reason"], done["updates"], done["epochs"], done["train_seconds"]):
            log(f"{name}: done, skipped")
            return done
    if newest_checkpoint(folder) is not None:  # best.pt alone: stopped between writing it and last.pt
        log(f"{name}: resuming")
        device = parse_sets(sets).get("device")  # a GPU's run may be carried on here
        return train(None, folder, data_dir=data_dir, resume=True, limits=limits, device=device, log=log)
    log(f"{name}: training")
    return train(config, folder, data_dir=data_dir, force=True, log=log)


def kept_settings(folder: Path, name: str, config: TrainConfig, limits: dict, log: Log) -> TrainConfig:
    """The settings of the run in ``folder``, under the length ``limits`` of ``--set``; logs
    those in which ``config`` differs, and what would make the run follow it."""
    from deeprnn.training.run_folder import read_config

    kept = with_limits(read_config(folder), limits)
    if differences := recipe_differences(kept, config):
        shown = "; ".join(f"{key}: {ours!r} → {now!r}" for key, (ours, now) in differences.items())
        remedy = f"remove {folder} to train it anew"
        if not differences.keys().isdisjoint(LIMITS):
            remedy = f"--set a length limit carries it on, or {remedy}"
        kept_as = f"{name}: kept with its own settings, where the configs and --set now differ"
        log(f"{kept_as} (the run's → now): {shown}; {remedy}")
    return kept


def reproduce(
    table: str,
    out: str | Path,
    *,
    models: list[str] | None = None,
    datas: list[str] | None = None,
    data_dir: str | None = None,
    sets: list[str] | None = None,
    pretraining: bool = True,
    tables: str | Path | None = None,
    log: Log = print,
) -> dict | None:
    """Run (or resume, or skip) every cell of ``table``; write <table>.json, .md and plots into
    ``tables`` (default: OUT)."""
    if table not in TABLES:
        raise UserError(f"unknown table {table!r}; expected one of: {', '.join(TABLES)}, all")
    out = Path(out)
    for data, model in cells(table, models, datas):
        run_cell(out, data, model, data_dir, sets or [], log, pretraining)
    if not from_environment().main:  # under torchrun, the first process writes the tables
        return None
    return write_table(table, out, log, into=None if tables is None else Path(tables))


def write_table(table: str, out: Path, log: Log = print, into: Path | None = None) -> dict:
    """Collect every finished run of ``table`` under ``out`` into JSON, Markdown and plots, in
    ``into`` (default: ``out``).

    A cell with no run under ``out`` keeps its row from an earlier ``into/<table>.json``, so one
    cell can be rerun in a fresh checkout (whose runs are not committed) without losing the rest.
    """
    metric = TABLES[table].metric
    into = out if into is None else into
    earlier = earlier_rows(into / f"{table}.json")
    rows = []
    for data in TABLES[table].data:
        for model in TABLES[table].models:
            row = run_row(table, data, model, out)
            if row is None:
                row = earlier.get((data, model))
            if row is not None:
                rows.append(row)
    result = {"table": table, "metric": metric, "rows": rows}
    write_json(into / f"{table}.json", result)
    write_text(into / f"{table}.md", markdown(result))
    plot_curves(result, into, log)
    return result


def earlier_rows(path: Path) -> dict[tuple[str, str], dict]:
    """The rows of a table written earlier, by (data, model); none if there is no such file."""
    if not path.exists():
        return {}
    try:
        return {(r["data"], r["model"]): r for r in json.loads(path.read_text())["rows"]}
    except (ValueError, TypeError, KeyError) as error:
        raise UserError(
            f"{path} is not a table written by deeprnn reproduce ({error!r}); its rows are kept for "
            "the cells without runs, so move it away or mend it"
        ) from error


def run_row(table: str, data: str, model: str, out: Path) -> dict | None:
    """The row of ``model`` on ``data`` from its runs under ``out``; None if it has not finished."""
    metric = TABLES[table].metric
    first = run_dir(out, data, model)
    stages = [f for f in (first, finetune_dir(first)) if (f / "results.json").exists()]
    if first not in stages:
        return None
    done = [json.loads((f / "results.json").read_text()) for f in stages]
    r = done[-1]
    paper = paper_value(data, model)
    return {
        "model": model,
        "data": data,
        f"test_{metric}": r[f"test_{metric}"],
        f"valid_{metric}": r[f"valid_{metric}"],
        "params": r["params"],
        "weights": r["weights"],
        "wall_seconds": sum(d["train_seconds"] for d in done),
        "device": r["device"],
        "epochs": sum(d["epochs"] for d in done),
        "updates": sum(d["updates"] for d in done),
        "paper": paper,
        "at_or_below_paper": None if paper is None else r[f"test_{metric}"] <= paper,
        "scale": scale(r.get("stop_reason", "")),
        f"test_{metric}_from_second_frame": r.get("scores", {})
        .get("test_from_second_frame", {})
        .get("value"),
        "init_from": json.loads((first / "config.json").read_text()).get("init_from"),
        "first_stage": None
        if len(done) == 1
        else {
            f"test_{metric}": done[0][f"test_{metric}"],
            f"valid_{metric}": done[0][f"valid_{metric}"],
            "epochs": done[0]["epochs"],
            "run": str(first),
        },
        "run": str(stages[-1]),
        "curve": curve(stages),
    }


def curve(stages: list[Path]) -> list[list[float]]:
    """[update, valid metric] at every evaluation; a second stage continues from the first's end."""
    points, after = [], 0
    for folder in stages:
        history = metrics(folder)
        points += [[after + h["update"], h["value"]] for h in history]
        after += history[-1]["update"] if history else 0
    return points


def scale(stop_reason: str) -> str:
    """'full' for a run that ran until early stopping, its rate's floor or its epochs, else what
    cut it short."""
    converged = ("early stopping", "min_lr", "epochs")
    return "full" if stop_reason in converged else f"limited ({stop_reason or 'unknown'})"


def markdown(result: dict) -> str:
    metric = result["metric"]
    later = f"test_{metric}_from_second_frame"
    tcn = any(r.get(later) is not None for r in result["rows"])  # music since rows held it
    lines = [
        f"| data | model | test {metric} | paper | at or below the paper | valid {metric} | weights | epochs "
        "| seconds | scale |" + (" test, frames 2..T |" if tcn else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if tcn else ""),
    ]
    for r in result["rows"]:
        test, valid = r[f"test_{metric}"], r[f"valid_{metric}"]
        if r["paper"] is None:
            paper = reached = "–"
        else:
            paper = f"{r['paper']:g}"
            reached = "yes" if r["at_or_below_paper"] else f"no (+{test - r['paper']:.3f})"
        model, epochs = r["model"], f"{r['epochs']}"
        if r.get("first_stage"):  # (tables written before second stages have no such key)
            model, epochs = (
                f"{model} + finetune",
                f"{r['first_stage']['epochs']} + {r['epochs'] - r['first_stage']['epochs']}",
            )
        lines.append(
            f"| {r['data']} | {model} | {test:.3f} | {paper} | {reached} | {valid:.3f} | "
            f"{r['weights']:,} | {epochs} | {r['wall_seconds']:.0f} | {r['scale']} |"
            + (f" {r[later]:.3f} |" if tcn and r.get(later) is not None else " – |" if tcn else "")
        )
    return "\n".join(lines) + "\n"


def plot_curves(result: dict, out: Path, log: Log = print) -> list[Path]:
    """One PNG per data set: the validation metric against updates, one line per row.

    A row from a table written before rows held their curve is named in the legend without a
    line; a data set with no curve at all keeps its PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    table, written = result["table"], []
    for data in TABLES[table].data:
        rows = [r for r in result["rows"] if r["data"] == data]
        target = out / (f"{table}.png" if data == table else f"{table}-{data}.png")
        if not rows:
            continue
        drawn = [r for r in rows if "curve" in r]
        if not drawn:
            log(f"{target.name}: kept as it was (no row of {data} has a stored curve)")
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        lowest = min(v for r in drawn for _, v in r["curve"])
        colours = {}  # the paper's (or the anchor's) test value -> the colours of its rows' lines
        for r in rows:
            if "curve" in r:
                (line,) = ax.plot([u for u, _ in r["curve"]], [v for _, v in r["curve"]], label=r["model"])
                colours.setdefault(r.get("paper"), []).append(line.get_color())
            else:  # a legend entry only, in no colour of the cycle
                ax.plot([], [], " ", color="none", label=f"{r['model']}: no curve stored")
                log(f"{target.name}: {r['model']} has no stored curve")
        published = sorted({r["paper"] for r in rows if r.get("paper") is not None})
        for value in published:  # in its row's colour; grey where rows share it (or none is drawn)
            shared = colours.get(value, [])
            colour = shared[0] if len(shared) == 1 else "grey"
            ax.axhline(value, color=colour, linestyle="--", linewidth=0.8)
        ylabel = f"valid {result['metric']} (dashed: published test, in its row's colour)"
        ax.set(xlabel="updates", ylabel=ylabel, title=data)
        low = min([lowest, *published])
        ax.set_ylim(
            low - 0.02 * abs(low), max([lowest + 0.25 * abs(lowest) + 0.1, *published]) + 0.02 * abs(low)
        )
        ax.legend()
        fig.tight_layout()
        written.append(write_atomic(target, lambda file, fig=fig: fig.savefig(file, format="png", dpi=100)))
    return written


def metrics(folder: Path) -> list[dict]:
    """The validation history of the run in ``folder`` (empty if it has none)."""
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
