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


class Augment(StrEnum):
    scanner = "scanner"
    basic = "basic"
    none = "none"


class StoppingMetric(StrEnum):
    auroc = "auroc"
    auroc_loss = "auroc_loss"


INIT_FROM_FORM = "MODEL:VERSION, e.g. pneumonia:3"


def parse_init_from(value: str) -> tuple[str, int]:
    """``"pneumonia:3"`` -> ``("pneumonia", 3)``; anything else is a usage error naming the expected form."""
    name, sep, version = value.strip().rpartition(":")
    if not sep or not name or not version.isdigit() or int(version) < 1:
        raise typer.BadParameter(f"expected {INIT_FROM_FORM}; got {value!r}", param_hint="'--init-from'")
    return name, int(version)


def parse_class_map(values: list[str]) -> dict[str, str | None]:
    """``["OPACITY=PNEUMONIA", "COVID="]`` -> ``{"OPACITY": "PNEUMONIA", "COVID": None}`` (``NEW=``: a fresh row)."""
    mapping: dict[str, str | None] = {}
    for value in values:
        new, sep, old = value.partition("=")
        new, old = new.strip(), old.strip()
        if not sep or not new:
            raise typer.BadParameter(
                f"expected NEW=OLD (or NEW= for a fresh head row), e.g. OPACITY=PNEUMONIA; got {value!r}",
                param_hint="'--class-map'",
            )
        if new in mapping:
            raise typer.BadParameter(f"class {new!r} is mapped twice", param_hint="'--class-map'")
        mapping[new] = old or None
    return mapping


def recipe_fields(
    *,
    augment: Augment | None,
    label_smoothing: float | None,
    ema_decay: float | None,
    no_ema: bool,
    early_stopping_patience: int | None,
    no_early_stopping: bool,
    early_stopping_metric: StoppingMetric | None,
    sensitivity_confidence: float | None,
) -> dict[str, Any]:
    """The training-recipe fields the user gave (``--no-ema``/``--no-early-stopping`` send null: off)."""
    if no_ema and ema_decay is not None:
        raise typer.BadParameter("give --ema-decay or --no-ema, not both", param_hint="'--no-ema'")
    if no_early_stopping and early_stopping_patience is not None:
        raise typer.BadParameter(
            "give --early-stopping-patience or --no-early-stopping, not both", param_hint="'--no-early-stopping'"
        )
    fields: dict[str, Any] = {
        k: v
        for k, v in dict(
            augment=augment.value if augment else None,
            label_smoothing=label_smoothing,
            ema_decay=ema_decay,
            early_stopping_patience=early_stopping_patience,
            early_stopping_metric=early_stopping_metric.value if early_stopping_metric else None,
            sensitivity_confidence=sensitivity_confidence,
        ).items()
        if v is not None
    }
    if no_ema:
        fields["ema_decay"] = None
    if no_early_stopping:
        fields["early_stopping_patience"] = None
    return fields


RECIPE = "Training recipe"
WARM = "Warm start"


@app.command()
def create(
    dataset: Annotated[str, typer.Option(help="id of a ready dataset")],
    backbone: Annotated[
        str | None,
        typer.Option(
            help="resnet18/34/50, efficientnet_b0..b4, test_resnet... (default resnet18; with --init-from, the "
            "version's)"
        ),
    ] = None,
    strategy: Annotated[Strategy, typer.Option(help="head only, everything, or gradual unfreezing")] = Strategy.gradual,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    image_size: Annotated[int | None, typer.Option(help="input side in pixels (server default 224)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="server default 32")] = None,
    weights: Annotated[
        str | None, typer.Option(help="'none' (random, the default), 'imagenet' or a registered weights id")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="the model to register (server default 'pneumonia')")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the strategy's)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    target_sensitivity: Annotated[float | None, typer.Option(help="operating point (server default 0.95)")] = None,
    sensitivity_confidence: Annotated[
        float | None,
        typer.Option(
            help="confidence of the sensitivity lower bound the threshold must keep (server default 0.95; 0: the "
            "point estimate)"
        ),
    ] = None,
    augment: Annotated[
        Augment | None,
        typer.Option(help="scanner (server default), basic or none", rich_help_panel=RECIPE),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="0..0.5 (server default 0.1)", rich_help_panel=RECIPE)
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(help="moving average of the weights (server default 0.998)", rich_help_panel=RECIPE),
    ] = None,
    no_ema: Annotated[
        bool, typer.Option("--no-ema", help="keep the raw weights (ema_decay null)", rich_help_panel=RECIPE)
    ] = False,
    early_stopping_patience: Annotated[
        int | None,
        typer.Option(help="epochs without improvement before stopping (server default 3)", rich_help_panel=RECIPE),
    ] = None,
    no_early_stopping: Annotated[
        bool, typer.Option("--no-early-stopping", help="train every epoch", rich_help_panel=RECIPE)
    ] = False,
    early_stopping_metric: Annotated[
        StoppingMetric | None,
        typer.Option(help="auroc_loss (server default) or auroc", rich_help_panel=RECIPE),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL:VERSION",
            help="warm-start from a registered model version (its backbone and weights), e.g. pneumonia:3",
            rich_help_panel=WARM,
        ),
    ] = None,
    class_map: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NEW=OLD",
            help="with --init-from: the new class NEW starts from the head row of OLD (NEW=: a fresh row); repeatable",
            rich_help_panel=WARM,
        ),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="the same key returns the same job")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show progress until the job ends")] = False,
    json: JsonOpt = False,
) -> None:
    """Start a training job; with --follow, watch it (Ctrl-C asks whether to cancel it)."""
    spec = job_spec(
        dataset=dataset,
        backbone=backbone,
        strategy=strategy,
        epochs=epochs,
        optional=dict(
            image_size=image_size,
            batch_size=batch_size,
            model_name=model_name,
            lr=lr,
            seed=seed,
            target_sensitivity=target_sensitivity,
        ),
        weights=weights,
        init_from=init_from,
        class_map=class_map or [],
        recipe=recipe_fields(
            augment=augment,
            label_smoothing=label_smoothing,
            ema_decay=ema_decay,
            no_ema=no_ema,
            early_stopping_patience=early_stopping_patience,
            no_early_stopping=no_early_stopping,
            early_stopping_metric=early_stopping_metric,
            sensitivity_confidence=sensitivity_confidence,
        ),
    )
    with command(json) as ctx:
        client = ctx.client()
        if "init_from" not in spec and spec.get("weights") == "none":
            ctx.note(
                "[yellow]warning:[/] training from random weights (--weights none); pretrained weights "
                "('imagenet' or a registered id) or a warm start (--init-from MODEL:VERSION) usually do much better",
                markup=True,
            )
        job = client.create_job(spec, idempotency_key=idempotency_key)
        start = f", warm-started from {init_from}" if init_from else ""
        ctx.note(
            f"job {job['id']} {job['status']}: {(job.get('spec') or {}).get('backbone') or spec.get('backbone')}, "
            f"{strategy.value}, {epochs} epochs{start} -> model '{job['model_name']}'"
        )
        if follow:
            job = follow_job(ctx, client, job["id"])
        ctx.emit(job, lambda out: render_job(out, job))


def job_spec(
    *,
    dataset: str,
    backbone: str | None,
    strategy: Strategy,
    epochs: int,
    optional: dict[str, Any],
    weights: str | None,
    init_from: str | None,
    class_map: list[str],
    recipe: dict[str, Any],
) -> JSON:
    """The ``POST /v1/jobs`` body: only what the user gave, besides the required fields.

    Without ``--init-from`` the backbone defaults to resnet18 and ``weights`` to ``none`` (sent, as always);
    with it the backbone and weights are sent only when given (the version's backbone is the server's default,
    and a warm start is its own source of weights)."""
    source = parse_init_from(init_from) if init_from is not None else None
    mapping = parse_class_map(class_map)
    if mapping and source is None:
        raise typer.BadParameter("a class map needs --init-from MODEL:VERSION", param_hint="'--class-map'")
    spec: dict[str, Any] = {"dataset_id": dataset, "strategy": strategy.value, "epochs": epochs}
    if source is not None:
        spec["init_from"] = {"model": source[0], "version": source[1]}
        if mapping:
            spec["init_from"]["class_map"] = mapping
        if backbone is not None:
            spec["backbone"] = backbone
        if weights is not None:
            spec["weights"] = weights
    else:
        spec["backbone"] = backbone or "resnet18"
        spec["weights"] = weights or "none"
    spec.update({k: v for k, v in optional.items() if v is not None})
    spec.update(recipe)
    return spec


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
    init = job.get("init_from")
    if init:
        mapped = ", ".join(f"{new} <- {old or '(fresh row)'}" for new, old in (init.get("class_map") or {}).items())
        out.print(f"  warm start: {init['model']} v{init['version']}" + (f" (classes {mapped})" if mapped else ""))
    recipe = recipe_line(spec)
    if recipe:
        out.print(f"  recipe: {recipe}")
    if job.get("sweep_id"):
        out.print(f"  member of sweep {job['sweep_id']}")
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


def recipe_line(spec: JSON) -> str:
    """The training recipe in a few words, from the fields the stored spec has."""
    parts = []
    if "augment" in spec:
        parts.append(f"augment {spec['augment']}")
    if "label_smoothing" in spec:
        parts.append(f"label smoothing {spec['label_smoothing']}")
    if "ema_decay" in spec:
        parts.append(f"EMA {spec['ema_decay']}" if spec["ema_decay"] is not None else "no EMA")
    if "early_stopping_patience" in spec:
        patience = spec["early_stopping_patience"]
        metric = spec.get("early_stopping_metric")
        parts.append(f"early stopping after {patience} ({metric})" if patience is not None else "no early stopping")
    if "sensitivity_confidence" in spec:
        parts.append(f"sensitivity confidence {spec['sensitivity_confidence']}")
    return ", ".join(parts)
