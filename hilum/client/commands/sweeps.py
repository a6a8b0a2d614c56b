"""`hilum sweeps create/list/show/cancel`: a grid of training jobs whose best member becomes a version."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from hilum.client.api import JSON, HilumClient
from hilum.client.commands.common import JsonOpt
from hilum.client.commands.jobs import Strategy
from hilum.client.errors import Exit
from hilum.client.follow import ask_to_cancel
from hilum.client.output import Ctx, command, fmt_float, fmt_seconds, fmt_time

app = typer.Typer(
    help="Try a grid of training configs and keep the best as a version (staff, admin).", no_args_is_help=True
)

TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_S = 2.0  # `--follow` asks GET /v1/sweeps/{id} this often
BUDGET = "Budget"


@app.command()
def create(
    dataset: Annotated[str, typer.Option(help="id of a ready dataset")],
    backbone: Annotated[list[str], typer.Option(help="a backbone to try; repeat for several (grid order)")],
    strategy: Annotated[list[Strategy], typer.Option(help="a strategy to try; repeat for several")],
    epochs: Annotated[int, typer.Option(min=1, help="epochs of every member")],
    image_size: Annotated[
        list[int] | None, typer.Option(help="an input side to try; repeat for several (server default 224)")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="the model the best member becomes a version of (server default 'pneumonia')")
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="at most this many members (server default 8)", rich_help_panel=BUDGET)
    ] = None,
    max_total_epochs: Annotated[
        int | None, typer.Option(help="members x epochs at most this", rich_help_panel=BUDGET)
    ] = None,
    max_minutes: Annotated[
        int | None,
        typer.Option(help="members not started this long after creation are cancelled", rich_help_panel=BUDGET),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="server default 32")] = None,
    weights: Annotated[
        str | None, typer.Option(help="'none' (random, the default), 'imagenet' or a registered weights id")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: each strategy's)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    target_sensitivity: Annotated[float | None, typer.Option(help="operating point (server default 0.95)")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="the same key returns the same sweep")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show progress until the sweep ends")] = False,
    json: JsonOpt = False,
) -> None:
    """Start a sweep: one job per backbone x strategy x image size, in that order while the budget allows;
    the member with the best validation AUROC becomes the next version. With --follow, watch it."""
    spec = sweep_spec(
        dataset=dataset,
        backbones=backbone,
        strategies=strategy,
        epochs=epochs,
        image_sizes=image_size or [],
        budget=dict(max_jobs=max_jobs, max_total_epochs=max_total_epochs, max_minutes=max_minutes),
        optional=dict(
            model_name=model_name,
            batch_size=batch_size,
            weights=weights,
            lr=lr,
            seed=seed,
            target_sensitivity=target_sensitivity,
        ),
    )
    with command(json) as ctx:
        client = ctx.client()
        if spec.get("weights", "none") == "none":
            ctx.note(
                "[yellow]warning:[/] every member trains from random weights (--weights none); pretrained weights "
                "('imagenet' or a registered id) usually do much better",
                markup=True,
            )
        sweep = client.create_sweep(spec, idempotency_key=idempotency_key)
        skipped = f", {len(sweep.get('skipped') or [])} skipped by the budget" if sweep.get("skipped") else ""
        ctx.note(
            f"sweep {sweep['id']} {sweep['status']}: {len(sweep['members'])} members{skipped} -> model "
            f"'{sweep['model_name']}'"
        )
        if follow:
            sweep = follow_sweep(ctx, client, sweep["id"])
        ctx.emit(sweep, lambda out: render_sweep(out, sweep))


def sweep_spec(
    *,
    dataset: str,
    backbones: list[str],
    strategies: list[Strategy],
    epochs: int,
    image_sizes: list[int],
    budget: dict[str, int | None],
    optional: dict[str, Any],
) -> JSON:
    """The ``POST /v1/sweeps`` body: the grid, and only the shared fields and budget limits the user gave."""
    spec: dict[str, Any] = {
        "dataset_id": dataset,
        "backbones": list(backbones),
        "strategies": [s.value for s in strategies],
        "epochs": epochs,
    }
    if image_sizes:
        spec["image_sizes"] = list(image_sizes)
    limits = {k: v for k, v in budget.items() if v is not None}
    if limits:
        spec["budget"] = limits
    spec.update({k: v for k, v in optional.items() if v is not None})
    return spec


@app.command("list")
def list_(
    dataset: Annotated[str | None, typer.Option(help="only this dataset's sweeps")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    json: JsonOpt = False,
) -> None:
    """List sweeps, newest first."""
    with command(json) as ctx:
        rows = ctx.client().list_sweeps(dataset_id=dataset, limit=limit)
        ctx.emit(rows, lambda out: out.print(sweeps_table(rows)))


@app.command()
def show(sweep_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """A sweep: its members table (config, status, validation AUROC and loss, time, the best), skipped configs
    and the registered version."""
    with command(json) as ctx:
        sweep = ctx.client().get_sweep(sweep_id)
        ctx.emit(sweep, lambda out: render_sweep(out, sweep))


@app.command()
def cancel(sweep_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """Cancel a sweep's queued and running members (no version is registered)."""
    with command(json) as ctx:
        sweep = ctx.client().cancel_sweep(sweep_id)
        ctx.emit(sweep, lambda out: out.print(f"sweep {sweep['id']}: {sweep['status']} (cancel requested)"))


@app.command()
def follow(sweep_id: Annotated[str, typer.Argument()], json: JsonOpt = False) -> None:
    """Watch a sweep until it ends (Ctrl-C asks whether to cancel it). Exit 1 unless it succeeds."""
    with command(json) as ctx:
        sweep = follow_sweep(ctx, ctx.client(), sweep_id)
        ctx.emit(sweep, lambda out: render_sweep(out, sweep))


def follow_sweep(ctx: Ctx, client: HilumClient, sweep_id: str, *, poll_s: float | None = None) -> JSON:
    """Poll ``GET /v1/sweeps/{id}`` until the sweep ends, with a bar of ended members and one line per member
    as it ends; on Ctrl-C ask whether to cancel it. Returns the last snapshot (exit 1 unless it succeeded)."""
    poll = POLL_S if poll_s is None else poll_s
    columns = (
        SpinnerColumn(),
        TextColumn("members"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    sweep: JSON | None = None
    reported: set[str] = set()
    try:
        with Progress(*columns, console=ctx.err, disable=ctx.json) as progress:
            ctx.note(f"following sweep {sweep_id} (Ctrl-C: cancel it or detach)")
            task = progress.add_task(sweep_id, total=None, info="")
            while True:
                sweep = client.get_sweep(sweep_id)
                members = sweep.get("members") or []
                ended = [m for m in members if m["status"] in TERMINAL]
                for m in ended:
                    if m["job_id"] not in reported:
                        reported.add(m["job_id"])
                        progress.console.print(f"member {config_text(m['config'])}: {member_outcome(m)}")
                running = sum(m["status"] == "running" for m in members)
                best = max((m["val_auroc"] for m in ended if m.get("val_auroc") is not None), default=None)
                info = f"{sweep['status']} · running {running} · best val AUROC {fmt_float(best)}"
                progress.update(task, total=len(members), completed=len(ended), info=info)
                if sweep["status"] in TERMINAL:
                    break
                time.sleep(poll)
    except KeyboardInterrupt:
        return interrupted(ctx, client, sweep_id)
    assert sweep is not None
    if sweep["status"] != "succeeded":
        ctx.exit_code = Exit.FAILED
    return sweep


def interrupted(ctx: Ctx, client: HilumClient, sweep_id: str) -> JSON:
    return ask_to_cancel(
        ctx,
        f"sweep {sweep_id}",
        cancel=lambda: client.cancel_sweep(sweep_id),
        get=lambda: client.get_sweep(sweep_id),
        stops="running members stop at their next step",
        again=f"`hilum sweeps show {sweep_id}` to see it",
    )


def config_text(config: JSON) -> str:
    return f"{config.get('backbone')} {config.get('strategy')} {config.get('image_size')} px"


def member_outcome(m: JSON) -> str:
    if m["status"] == "succeeded":
        return f"succeeded, val AUROC {fmt_float(m.get('val_auroc'))}, {fmt_seconds(m.get('seconds'))}"
    return m["status"] + (f": {m['error']}" if m.get("error") else "")


def sweeps_table(rows: list[JSON]) -> Table:
    table = Table("id", "status", "model", "members", "skipped", "best val AUROC", "created")
    for s in rows:
        members = s.get("members") or []
        ended = sum(m["status"] in TERMINAL for m in members)
        best = next((m for m in members if m.get("best")), None)
        version = f" v{s['model_version']}" if s.get("model_version") else ""
        table.add_row(
            s["id"],
            s["status"],
            s["model_name"] + version,
            f"{ended}/{len(members)} ended",
            str(len(s.get("skipped") or [])),
            fmt_float(best.get("val_auroc") if best else None),
            fmt_time(s["created_at"]),
        )
    return table


def render_sweep(out: Console, sweep: JSON) -> None:
    request = sweep.get("request") or {}
    out.print(f"sweep {sweep['id']}: {sweep['status']}" + (" (cancel requested)" if _cancelling(sweep) else ""))
    budget = request.get("budget") or {}
    limits = ", ".join(f"{k} {v}" for k, v in budget.items() if v is not None)
    out.print(
        f"  dataset {sweep['dataset_id']}, epochs per member {request.get('epochs', '-')}"
        + (f", budget {limits}" if limits else "")
    )
    table = Table("", "config", "status", "val AUROC", "95% CI", "val loss", "seconds", "best epoch", "job")
    for m in sweep.get("members") or []:
        ci = m.get("val_auroc_ci95")
        table.add_row(
            "*" if m.get("best") else "",
            config_text(m["config"]),
            m["status"],
            fmt_float(m.get("val_auroc")),
            f"{fmt_float(ci[0])}-{fmt_float(ci[1])}" if ci else "-",
            fmt_float(m.get("val_loss")),
            "-" if m.get("seconds") is None else f"{float(m['seconds']):.1f}",
            str(m.get("best_epoch") or "-"),
            m["job_id"],
        )
    out.print(table)
    for m in sweep.get("members") or []:
        if m.get("error"):
            out.print(f"  {config_text(m['config'])}: {m['error']}")
    skipped = sweep.get("skipped") or []
    if skipped:
        out.print(f"  skipped by the budget: {'; '.join(config_text(c) for c in skipped)}")
    if sweep.get("model_version"):
        out.print(
            f"  registered: model '{sweep['model_name']}' version {sweep['model_version']} "
            f"(* the best member, job {sweep.get('best_job_id')})"
        )
    elif sweep["status"] in TERMINAL:
        out.print(f"  no version registered{': ' + sweep['error'] if sweep.get('error') else ''}")
    if sweep.get("finished_at"):
        out.print(f"  created {fmt_time(sweep['created_at'])}, finished {fmt_time(sweep['finished_at'])}")


def _cancelling(sweep: JSON) -> bool:
    return bool(sweep.get("cancel_requested")) and sweep["status"] not in TERMINAL
