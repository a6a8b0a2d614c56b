"""`hilum models list/show/promote/rollback/import`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from hilum.client.api import JSON
from hilum.client.commands.common import JsonOpt
from hilum.client.errors import ClientError
from hilum.client.output import command, fmt_float, fmt_time

app = typer.Typer(help="Registered models, versions and aliases; promote and roll back.", no_args_is_help=True)

AliasOpt = Annotated[str, typer.Option(help="the alias to move")]


@app.command("list")
def list_(json: JsonOpt = False) -> None:
    """Registered models with their newest version and aliases."""
    with command(json) as ctx:
        rows = ctx.client().list_models()
        ctx.emit(rows, lambda out: out.print(models_table(rows)))


@app.command()
def show(name: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """A model's versions (with validation and test AUROC) and its alias history."""
    with command(json) as ctx:
        client = ctx.client()
        model = client.get_model(name)
        try:
            model["alias_history"] = client.alias_history(name)
        except ClientError:  # clinicians may read models but not the history
            model["alias_history"] = None
        ctx.emit(model, lambda out: render_model(out, model))


@app.command()
def promote(
    name: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument(min=1)],
    alias: AliasOpt = "production",
    json: JsonOpt = False,
) -> None:
    """Point the production alias (or --alias) at VERSION."""
    with command(json) as ctx:
        client = ctx.client()
        before = client.get_model(name)["aliases"].get(alias)
        row = client.set_alias(name, alias, version)
        ctx.emit(row, lambda out: out.print(f"{name}: {alias} {_v(before)} -> v{row['version']}"))


@app.command()
def rollback(name: Annotated[str, typer.Argument()], alias: AliasOpt = "production", json: JsonOpt = False) -> None:
    """Move the alias back to the version it pointed at before its last move (from the alias history)."""
    with command(json) as ctx:
        client = ctx.client()
        moves = [e for e in client.alias_history(name) if e["alias"] == alias]
        if not moves or moves[-1].get("from_version") is None:
            raise ClientError(f"model '{name}' has no earlier '{alias}' version to roll back to")
        last = moves[-1]
        row = client.set_alias(name, alias, int(last["from_version"]))
        message = f"{name}: {alias} v{last['to_version']} -> v{row['version']} (rolled back)"
        ctx.emit(row, lambda out: out.print(message))


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a Hilum model artifact (model.pt)")
    ],
    model_name: Annotated[str, typer.Option(help="the model it becomes the next version of")],
    json: JsonOpt = False,
) -> None:
    """Import a model artifact trained at another site as the next version of --model-name (admin)."""
    with command(json) as ctx:
        columns = (TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=ctx.err, disable=ctx.json, transient=True) as progress:
            task = progress.add_task(file.name, total=file.stat().st_size)
            row = ctx.client().import_model(file, model_name=model_name, on_bytes=lambda n: progress.advance(task, n))
        ctx.emit(row, lambda out: render_imported(out, file, row))


def render_imported(out: Console, file: Path, row: JSON) -> None:
    out.print(f"imported {file.name} as model '{row['model_name']}' version {row['version']} ({row.get('source')})")
    val = (row.get("metrics") or {}).get("val") or {}
    out.print(
        f"  {row.get('backbone')}, classes {', '.join(row.get('class_names') or [])}, threshold "
        f"{fmt_float(row.get('threshold'))}, val AUROC {fmt_float(val.get('auroc'))}"
    )
    if row.get("fit_for_use") is False:
        out.print(f"  not fit for use: {'; '.join(row.get('fitness_reasons') or ['no reason given'])}")


def _v(version: int | None) -> str:
    return "(none)" if version is None else f"v{version}"


def models_table(rows: list[JSON]) -> Table:
    table = Table("model", "versions", "latest", "aliases")
    for m in rows:
        aliases = ", ".join(f"{a} v{v}" for a, v in sorted((m.get("aliases") or {}).items()))
        table.add_row(m["name"], str(len(m.get("versions") or [])), f"v{m['latest_version']}", aliases or "-")
    return table


def render_model(out: Console, model: JSON) -> None:
    by_version: dict[int, list[str]] = {}
    for alias, v in (model.get("aliases") or {}).items():
        by_version.setdefault(v, []).append(alias)
    columns = ("version", "backbone", "val AUROC", "test AUROC", "threshold", "fit for use", "aliases", "created")
    table = Table(*columns, title=model["name"])
    for v in model.get("versions") or []:
        metrics = v.get("metrics") or {}
        table.add_row(
            f"v{v['version']}",
            v["backbone"],
            fmt_float((metrics.get("val") or {}).get("auroc")),
            fmt_float((metrics.get("test") or {}).get("auroc")),
            fmt_float(v.get("threshold")),
            {True: "yes", False: "no"}.get(bool(v["fit_for_use"])) if "fit_for_use" in v else "-",
            ", ".join(sorted(by_version.get(v["version"], []))) or "-",
            fmt_time(v["created_at"]),
        )
    out.print(table)
    for v in model.get("versions") or []:
        if v.get("fit_for_use") is False:
            out.print(
                f"v{v['version']} is not fit for use: {'; '.join(v.get('fitness_reasons') or ['no reason given'])}"
            )
    history = model.get("alias_history")
    if history:
        hist = Table("when", "alias", "from", "to", "by", title="alias history")
        for e in history:
            hist.add_row(
                fmt_time(e["created_at"]),
                e["alias"],
                _v(e.get("from_version")),
                f"v{e['to_version']}",
                e.get("actor") or "-",
            )
        out.print(hist)
