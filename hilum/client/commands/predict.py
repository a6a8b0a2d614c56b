"""`hilum predict FILE...`: one answer per file in a table; a bad file fails alone."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from hilum.client.api import JSON, HilumClient
from hilum.client.commands.common import JsonOpt
from hilum.client.errors import ApiError, Exit
from hilum.client.output import command, fmt_float

# Statuses that concern one file (unreadable, too large, not a chest film); anything else stops the command.
PER_FILE_STATUSES = {400, 413, 415, 422}


def predict(
    files: Annotated[list[Path], typer.Argument(help="DICOM, PNG or JPEG files")],
    model: Annotated[str, typer.Option(help="the model name")] = "pneumonia",
    version: Annotated[int | None, typer.Option(min=1, help="a version (default: the production alias)")] = None,
    alias: Annotated[str | None, typer.Option(help="an alias instead of a version")] = None,
    heatmap_dir: Annotated[
        Path | None, typer.Option(file_okay=False, help="ask for Grad-CAM heatmaps and write them here as PNG")
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="test-time augmentation: average over a few anatomy-safe variants")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Classify X-rays. Exit 1 when any file was refused (its row says why)."""
    with command(json) as ctx:
        client = ctx.client()
        if heatmap_dir is not None:
            heatmap_dir.mkdir(parents=True, exist_ok=True)
        targets = heatmap_paths(files, heatmap_dir)
        results = []
        with Progress(console=ctx.err, disable=ctx.json or len(files) < 2, transient=True) as progress:
            for path, target in progress.track(list(zip(files, targets, strict=True)), description="predicting"):
                results.append(
                    predict_one(client, path, model=model, version=version, alias=alias, heatmap=target, tta=tta)
                )
        if any(not r["ok"] for r in results):
            ctx.exit_code = Exit.FAILED
        ctx.emit(results, lambda out: render_results(out, results, heatmaps=heatmap_dir is not None))


def predict_one(
    client: HilumClient,
    path: Path,
    *,
    model: str,
    version: int | None,
    alias: str | None,
    heatmap: Path | None,
    tta: bool = False,
) -> dict[str, Any]:
    """One file's row; a refusal that concerns only this file (400/413/415/422) becomes its error."""
    result: dict[str, Any] = {"file": str(path), "ok": False, "prediction": None, "error": None}
    if not path.is_file():
        result["error"] = "no such file" if not path.exists() else "not a file"
        return result
    try:
        with path.open("rb") as fh:
            answer = client.predict(
                model, fh, path.name, version=version, alias=alias, heatmap=heatmap is not None, tta=tta
            )
    except ApiError as exc:
        if exc.status not in PER_FILE_STATUSES:
            raise
        result["error"] = exc.detail or exc.message
        result["status"] = exc.status
        return result
    png = pop_heatmap(answer)
    if heatmap is not None and png is not None:
        heatmap.write_bytes(png)
        result["heatmap_file"] = str(heatmap)
    result.update(ok=True, prediction=answer)
    return result


def pop_heatmap(answer: JSON) -> bytes | None:
    """The heatmap PNG, whichever shape the server sends (``heatmap_png`` or ``heatmap.png_base64``); the
    base64 text is dropped from the answer (the file is written instead)."""
    encoded = answer.pop("heatmap_png", None)
    heatmap = answer.get("heatmap")
    if isinstance(heatmap, dict) and heatmap.get("png_base64"):
        encoded = heatmap.pop("png_base64")
    return base64.b64decode(encoded) if encoded else None


def heatmap_paths(files: list[Path], folder: Path | None) -> list[Path | None]:
    """``FILENAME.heatmap.png`` in ``folder`` per file; the same name twice in one run gets ``-2``, ``-3``..."""
    if folder is None:
        return [None] * len(files)
    out: list[Path | None] = []
    seen: set[str] = set()
    for path in files:
        name, n = f"{path.name}.heatmap.png", 1
        while name in seen:
            n += 1
            name = f"{path.name}-{n}.heatmap.png"
        seen.add(name)
        out.append(folder / name)
    return out


def flags(answer: JSON) -> str:
    """Uncertainty, out-of-distribution and fitness signals, when the server sends them (compact)."""
    out = []
    pset = answer.get("prediction_set")
    if isinstance(pset, list) and len(pset) != 1:
        out.append("uncertain: {" + ", ".join(map(str, pset)) + "}" if pset else "uncertain: empty prediction set")
    if answer.get("in_distribution") is False:
        score = answer.get("ood_score")
        out.append("out of distribution" + (f" (score {fmt_float(score, 1)})" if score is not None else ""))
    if answer.get("label_withheld"):
        out.append("label withheld")
    if answer.get("fit_for_use") is False:
        out.append("model not fit for use")
    return "; ".join(out)


def warnings_of(answer: JSON) -> list[str]:
    return [str(w.get("message", w)) if isinstance(w, dict) else str(w) for w in answer.get("warnings") or []]


def render_results(out: Console, results: list[dict[str, Any]], *, heatmaps: bool) -> None:
    table = Table("file", "label", "probability", "model", "flags / error")
    if heatmaps:
        table.add_column("heatmap")
    for col in table.columns:
        col.overflow = "fold"
    for r in results:
        a = r["prediction"]
        row: list[str | Text]
        if a is None:
            row = [r["file"], Text("refused", style="red"), "-", "-", str(r["error"])]
        else:
            positive = a.get("positive_class") or a.get("label") or max(a["probabilities"], key=a["probabilities"].get)
            prob = a["probabilities"].get(positive)
            label = a.get("label") or "(withheld)"
            served = f"{a['model']} v{a['version']}" + (f" (TTA x{a['tta']})" if a.get("tta") else "")
            row = [r["file"], label, f"{positive} {fmt_float(prob)}", served, flags(a)]
        if heatmaps:
            row.append(r.get("heatmap_file") or "-")
        table.add_row(*row)
    out.print(table)
    for r in results:
        for warning in warnings_of(r["prediction"] or {}):
            out.print(f"{r['file']}: {warning}")
    refused = sum(not r["ok"] for r in results)
    if refused:
        out.print(f"{refused} of {len(results)} files refused")
