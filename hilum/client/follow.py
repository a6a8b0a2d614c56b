"""Following a training job: epoch and step bars with validation AUROC and ETA, from the event stream.

Falls back to polling ``GET /v1/jobs/{id}`` when the stream is unavailable. Ctrl-C asks whether to
cancel the job (yes: ``POST /cancel``) or to detach and leave it running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from hilum.client.api import JSON, HilumClient
from hilum.client.errors import ApiError, ClientError, Exit
from hilum.client.output import Ctx, fmt_float, fmt_seconds

TERMINAL = {"succeeded", "failed", "cancelled"}


def snapshots(client: HilumClient, job_id: str, *, poll_s: float = 1.0) -> Iterator[JSON]:
    """Job snapshots until the job ends: the SSE stream, or polling when the stream is refused or breaks."""
    last: JSON | None = None
    try:
        for snap in client.job_events(job_id):
            last = snap
            yield snap
            if snap["status"] in TERMINAL:
                return
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
    except ClientError:
        pass  # the stream broke: poll instead
    while last is None or last["status"] not in TERMINAL:
        last = client.get_job(job_id)
        yield last
        if last["status"] not in TERMINAL:
            time.sleep(poll_s)


class JobBars:
    """Two rich progress bars (epochs, steps of the epoch) and one line per finished epoch."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.epochs: TaskID = progress.add_task("epochs", total=None, info="queued")
        self.steps: TaskID = progress.add_task("steps", total=None, info="")
        self.logged_epochs = 0
        self.last: dict[str, float] = {}  # latest loss and throughput (phases after training send none)

    def update(self, job: JSON) -> None:
        p = job.get("progress") or {}
        epochs, done = p.get("epochs") or job["spec"].get("epochs"), int(p.get("epochs_done") or 0)
        spe, step = p.get("steps_per_epoch"), int(p.get("step") or 0)
        val = p.get("val") or {}
        self.last.update({k: p[k] for k in ("loss", "throughput_img_s") if p.get(k) is not None})
        eta = p.get("eta_s") if job["status"] == "running" else None
        info = f"{job['status']} {p.get('phase', '')}".strip()
        info += f" · val AUROC {fmt_float(val.get('auroc'))} · ETA {fmt_seconds(eta)}"
        self.progress.update(self.epochs, total=epochs, completed=done, info=info)
        if spe:
            in_epoch = spe if epochs and done >= epochs else max(0, min(spe, step - done * spe))
            step_info = f"loss {fmt_float(self.last.get('loss'))} · {self.last.get('throughput_img_s', '-')} img/s"
            groups = p.get("unfrozen_groups")
            if groups is not None and p.get("total_groups"):
                step_info += f" · unfrozen groups {groups}/{p['total_groups']}"
            self.progress.update(self.steps, total=spe, completed=in_epoch, info=step_info)
        if val and done > self.logged_epochs:
            self.logged_epochs = done
            figures = ", ".join(f"val {k} {fmt_float(val[k])}" for k in ("auroc", "loss", "accuracy") if k in val)
            self.progress.console.print(f"epoch {done}/{epochs}: {figures.replace('val auroc', 'val AUROC')}")


def follow_job(ctx: Ctx, client: HilumClient, job_id: str) -> JSON:
    """Show the job's progress until it ends; on Ctrl-C ask whether to cancel it. Returns the last snapshot."""
    columns = (
        TextColumn("{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    )
    job: JSON | None = None
    try:
        with Progress(*columns, console=ctx.err, disable=ctx.json) as progress:
            ctx.note(f"following job {job_id} (Ctrl-C: cancel it or detach)")
            bars = JobBars(progress)
            for job in snapshots(client, job_id):
                bars.update(job)
    except KeyboardInterrupt:
        return interrupted(ctx, client, job_id)
    assert job is not None
    if job["status"] != "succeeded":
        ctx.exit_code = Exit.FAILED
    return job


def interrupted(ctx: Ctx, client: HilumClient, job_id: str) -> JSON:
    return ask_to_cancel(
        ctx,
        f"job {job_id}",
        cancel=lambda: client.cancel_job(job_id),
        get=lambda: client.get_job(job_id),
        stops="a running job stops at its next step",
        again=f"`hilum jobs follow {job_id}` to watch it again",
    )


def ask_to_cancel(
    ctx: Ctx, what: str, *, cancel: Callable[[], JSON], get: Callable[[], JSON], stops: str, again: str
) -> JSON:
    """After Ctrl-C while following ``what``: cancel it, or detach and leave it running (exit 130 either way)."""
    try:
        yes = typer.confirm(f"\nCancel {what}? (no: detach and leave it running)", default=False, err=True)
    except (typer.Abort, EOFError, KeyboardInterrupt):
        yes = False
    if yes:
        item = cancel()
        ctx.note(f"cancel requested: {what} is {item['status']} ({stops})")
    else:
        item = get()
        ctx.note(f"detached: {what} keeps running; {again}")
    ctx.exit_code = Exit.INTERRUPTED
    return item
