"""`hilum jobs create/list/show/cancel/follow`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hilum.client.api import JSON
from hilum.client.commands.common import JsonOpt
from hilum.client.follow import follow_job
from hilum.client.output import command, fmt_float, fmt_seconds, fmt_time

app = typer.Typer(help="Start, watch and cancel training jobs (staff, admin).", no_args_is_help=True)


class Strategy(StrEnum):
    frozen = "frozen"
    full = "full"
    gradual = "gradual"


@app.command()
def create(
    dataset: Annotated[str, typer.Option(help="id of a ready dataset")],
    backbone: Annotated[str, typer.Option(help="resnet18/34/50, efficientnet_b0..b4, test_resnet...")] = "resnet18",
    strategy: Annotated[Strategy, typer.Option(help="head only, everything, or gradual unfreezing")] = Strategy.gradual,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    image_size: Annotated[int | None, typer.Option(help="input side in pixels (server default 224)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="server default 32")] = None,
    weights: Annotated[str, typer.Option(help="'none' (random), 'imagenet' or a registered weights id")] = "none",
    model_name: Annotated[str | None, typer.Option(help="the model to register (server default 'pneumonia')")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the strategy's)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    target_sensitivity: Annotated[float | None, typer.Option(help="operating point (server default 0.95)")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="the same key returns the same job")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show progress until the job ends")] = False,
    json: JsonOpt = False,
) -> None:
    """Start a training job; with --follow, watch it (Ctrl-C asks whether to cancel it)."""
    spec: dict[str, Any] = {"dataset_id": dataset, "backbone": backbone, "strategy": strategy.value, "epochs": epochs}
    optional = dict(
        image_size=image_size,
        batch_size=batch_size,
        weights=weights,
        model_name=model_name,
        lr=lr,
        seed=seed,
        target_sensitivity=target_sensitivity,
    )
    spec.update({k: v for k, v in optional.items() if v is not None})
    with command(json) as ctx:
        client = ctx.client()
        if weights == "none":
            ctx.note(
                "[yellow]warning:[/] training from random weights (--weights none); pretrained weights "
                "('imagenet' or a registered id) usually do much better",
                markup=True,
            )
        job = client.create_job(spec, idempotency_key=idempotency_key)
        ctx.note(
            f"job {job['id']} {job['status']}: {backbone}, {strategy.value}, {epochs} epochs -> model "
            f"'{job['model_name']}'"
        )
        if follow:
            job = follow_job(ctx, client, job["id"])
        ctx.emit(job, lambda out: render_job(out, job))


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, cancelled")] = None,
    dataset: Annotated[str | None, typer.Option(help="only this dataset's jobs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    with command(json) as ctx:
        rows = ctx.client().list_jobs(status=status, dataset_id=dataset, limit=limit)
        ctx.emit(rows, lambda out: out.print(jobs_table(rows)))


@app.command()
def show(job_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """A job: status, spec, progress, metrics."""
    with command(json) as ctx:
        job = ctx.client().get_job(job_id)
        ctx.emit(job, lambda out: render_job(out, job))


@app.command()
def cancel(job_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    with command(json) as ctx:
        job = ctx.client().cancel_job(job_id)
        ctx.emit(job, lambda out: out.print(f"job {job['id']}: {job['status']} (cancel requested)"))


@app.command()
def follow(job_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """Watch a job until it ends (Ctrl-C asks whether to cancel it). Exit 1 unless it succeeds."""
    with command(json) as ctx:
        job = follow_job(ctx, ctx.client(), job_id)
        ctx.emit(job, lambda out: render_job(out, job))


def jobs_table(rows: list[JSON]) -> Table:
    table = Table("id", "status", "model", "backbone", "strategy", "epoch", "val AUROC", "created")
    for j in rows:
        p, spec = j.get("progress") or {}, j.get("spec") or {}
        val = (j.get("metrics") or {}).get("val") or {}
        version = f" v{j['model_version']}" if j.get("model_version") else ""
        table.add_row(
            j["id"],
            j["status"],
            j["model_name"] + version,
            str(spec.get("backbone", "-")),
            str(spec.get("strategy", "-")),
            f"{p.get('epochs_done', 0)}/{spec.get('epochs', '-')}",
            fmt_float(val.get("auroc")),
            fmt_time(j["created_at"]),
        )
    return table


def render_job(out: Console, job: JSON) -> None:
    spec, p = job.get("spec") or {}, job.get("progress") or {}
    out.print(f"job {job['id']}: {job['status']}")
    out.print(
        f"  {spec.get('backbone')}, {spec.get('strategy')}, {spec.get('epochs')} epochs at {spec.get('image_size')} px,"
        f" weights {job.get('weights')}, dataset {job['dataset_id']}"
    )
    if job.get("model_version"):
        out.print(f"  registered: model '{job['model_name']}' version {job['model_version']}")
    if p:
        out.print(
            f"  progress: epoch {p.get('epochs_done', 0)}/{p.get('epochs', spec.get('epochs'))}, phase "
            f"{p.get('phase', '-')}, elapsed {fmt_seconds(p.get('elapsed_s'))}"
        )
    metrics = job.get("metrics") or {}
    for split in ("val", "test"):
        m = metrics.get(split)
        if isinstance(m, dict):
            names = ("auroc", "accuracy", "sensitivity", "specificity", "loss")
            out.print(f"  {split}: " + ", ".join(f"{n} {fmt_float(m[n])}" for n in names if m.get(n) is not None))
    if job.get("error"):
        out.print(f"  error: {job['error']}")
