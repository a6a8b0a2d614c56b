"""`hilum datasets upload/list/show`."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hilum.client.api import JSON, HilumClient
from hilum.client.commands.common import JsonOpt
from hilum.client.errors import ClientError, Exit
from hilum.client.output import Ctx, command, fmt_time

app = typer.Typer(help="Upload datasets and read their ingestion reports (staff, admin).", no_args_is_help=True)


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a zip of X-rays")],
    name: Annotated[str | None, typer.Option(help="a name for the dataset")] = None,
    wait: Annotated[bool, typer.Option(help="wait for ingestion and print the report")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for ingestion")] = 3600.0,
    json: JsonOpt = False,
) -> None:
    """Upload a zip (streamed, with a byte progress bar), wait for ingestion, summarise the report."""
    with command(json) as ctx:
        client = ctx.client()
        dataset = upload_with_progress(ctx, client, file, name)
        ctx.note(f"uploaded {file.name}: dataset {dataset['id']} is {dataset['status']}")
        if wait:
            dataset = wait_ingested(ctx, client, dataset["id"], timeout=timeout)
            if dataset["status"] == "failed":
                ctx.exit_code = Exit.FAILED
        ctx.emit(dataset, lambda out: render_dataset(out, dataset))


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="ingesting, ready or failed")] = None, json: JsonOpt = False
) -> None:
    """List datasets."""
    with command(json) as ctx:
        rows = ctx.client().list_datasets(status)
        ctx.emit(rows, lambda out: out.print(datasets_table(rows)))


@app.command()
def show(dataset_id: Annotated[str, typer.Argument(help="the dataset id")], json: JsonOpt = False) -> None:
    """A dataset with a summary of its ingestion report."""
    with command(json) as ctx:
        dataset = ctx.client().get_dataset(dataset_id)
        ctx.emit(dataset, lambda out: render_dataset(out, dataset))


def upload_with_progress(ctx: Ctx, client: HilumClient, file: Path, name: str | None) -> JSON:
    columns = (
        TextColumn("uploading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=ctx.err, disable=ctx.json, transient=False) as progress:
        task = progress.add_task(file.name, total=file.stat().st_size)
        return client.upload_dataset(file, name=name, on_bytes=lambda n: progress.advance(task, n))


def wait_ingested(ctx: Ctx, client: HilumClient, dataset_id: str, *, timeout: float) -> JSON:
    """Poll until the dataset leaves ``ingesting`` (a bar when the server reports done/total, else a spinner)."""
    columns = (SpinnerColumn(), TextColumn("ingesting {task.description}"), BarColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=ctx.err, disable=ctx.json) as progress:
        task = progress.add_task(dataset_id, total=None)
        while True:
            dataset = client.get_dataset(dataset_id)
            done, total = _ingest_progress(dataset)
            if total:
                progress.update(task, completed=done, total=total)
            if dataset["status"] != "ingesting":
                return dataset
            if time.monotonic() > deadline:
                raise ClientError(
                    f"dataset {dataset_id} still ingesting after {timeout:.0f} s; see `hilum datasets "
                    f"show {dataset_id}`"
                )
            time.sleep(0.5)


def _ingest_progress(dataset: JSON) -> tuple[int, int]:
    progress = dataset.get("progress") or {}
    return int(progress.get("done") or 0), int(progress.get("total") or 0)


def datasets_table(rows: list[JSON]) -> Table:
    table = Table("id", "name", "status", "images", "classes", "created")
    for d in rows:
        counts = ", ".join(f"{c} {n}" for c, n in (d.get("class_counts") or {}).items())
        table.add_row(d["id"], d["name"], d["status"], str(d.get("image_count", 0)), counts, fmt_time(d["created_at"]))
    return table


def render_dataset(out: Console, d: JSON, *, top: int = 5) -> None:
    """The report in a few lines: accepted, per class, rejected with the commonest reasons."""
    report: dict[str, Any] = d.get("report") or {}
    out.print(f"dataset {d['id']} ({d['name']}): {d['status']}")
    if d.get("error"):
        out.print(f"  error: {d['error']}")
    if d["status"] == "ingesting":
        return
    out.print(f"  accepted: {d.get('image_count', 0)} images")
    counts = d.get("class_counts") or {}
    if counts:
        table = Table("class", "images", box=None, padding=(0, 2))
        for cls, n in counts.items():
            table.add_row(cls, str(n))
        out.print(table)
    extras = []
    if report.get("imbalance_ratio") is not None:
        extras.append(f"imbalance {report['imbalance_ratio']}")
    if report.get("patient_count"):
        extras.append(f"patients {report['patient_count']}")
    extras.append(f"duplicates {len(report.get('duplicates') or [])}")
    extras.append(f"label conflicts {len(report.get('conflicts') or [])}")
    out.print("  " + ", ".join(extras))
    rejected = d.get("rejected") or []
    out.print(f"  rejected: {len(rejected)}")
    for reason, n in Counter(r["reason"] for r in rejected).most_common(top):
        out.print(f"    {n} x {reason}")
