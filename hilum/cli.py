"""The `hilum` command: client commands that talk to a Hilum server over HTTP, and the admin/ops commands
that run on the server's host (run, worker, migrate, synth, create-key, weights import)."""

from __future__ import annotations

import argparse
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hilum.client.commands import datasets, jobs, models, sweeps
from hilum.client.commands.auth import login, logout
from hilum.client.commands.predict import predict
from hilum.settings import Settings, get_settings

HELP = """Hilum: chest X-ray classifiers, trained and served.

Client commands talk to a Hilum server over HTTP: run `hilum login URL` once, or set HILUM_URL and
HILUM_KEY. Each takes --json (one JSON document on stdout). Exit codes are listed in the README.

Admin commands run on the server's host and use its settings (HILUM_* variables).
"""
app = typer.Typer(name="hilum", help=HELP, no_args_is_help=True, add_completion=False)
weights_app = typer.Typer(help="Pretrained weights files for air-gapped sites (admin, on the server host).")

CLIENT = "Client (over HTTP)"
ADMIN = "Admin (on the server host)"

app.command(rich_help_panel=CLIENT)(login)
app.command(rich_help_panel=CLIENT)(logout)
app.add_typer(datasets.app, name="datasets", rich_help_panel=CLIENT)
app.add_typer(jobs.app, name="jobs", rich_help_panel=CLIENT)
app.add_typer(models.app, name="models", rich_help_panel=CLIENT)
app.add_typer(sweeps.app, name="sweeps", rich_help_panel=CLIENT)
app.command(rich_help_panel=CLIENT)(predict)
app.add_typer(weights_app, name="weights", rich_help_panel=ADMIN)


SCANNER_HELP = (
    "render as another site would: film (film/CR curve, grain, half resolution, bright collimation), portable "
    "(bedside AP: noisy, flat, low resolution, small rotated patients, leads), dr (high contrast, edge enhancement)"
)
DIFFICULTY_HELP = "0..1: share of subtle pneumonias and of normal-but-dense films (both classes) rises with it"
RATIO_HELP = "NORMAL:PNEUMONIA, e.g. 1:3; the larger class gets --per-class films"


class Role(StrEnum):
    admin = "admin"
    staff = "staff"
    clinician = "clinician"


class ImageFormat(StrEnum):
    png = "png"
    jpeg = "jpeg"
    dicom = "dicom"


class ScannerName(StrEnum):  # pipelines.synthetic.SCANNERS (not imported here: it pulls numpy into every command)
    film = "film"
    portable = "portable"
    dr = "dr"


def _admin_settings() -> Settings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return get_settings()


@app.command(rich_help_panel=ADMIN)
def run() -> None:
    """Start the API, a worker and (without REDIS_URL) an embedded Redis."""
    from hilum.launcher import run as run_stack

    raise typer.Exit(run_stack(_admin_settings()))


@app.command(rich_help_panel=ADMIN)
def worker() -> None:
    """Start only this host's workers (one per GPU) against the shared REDIS_URL."""
    from hilum.launcher import run_workers

    raise typer.Exit(run_workers(_admin_settings()))


@app.command(rich_help_panel=ADMIN)
def migrate() -> None:
    """Apply database migrations."""
    from hilum.migrate import upgrade_to_head

    upgrade_to_head(_admin_settings().resolved_database_url)


@app.command(rich_help_panel=ADMIN)
def synth(
    out: Annotated[Path, typer.Argument(help="output folder, or a .zip file")],
    per_class: Annotated[int, typer.Option(help="images per class")] = 100,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 256,
    fmt: Annotated[ImageFormat, typer.Option("--format")] = ImageFormat.png,
    images_per_patient: Annotated[int, typer.Option()] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    scanner: Annotated[ScannerName | None, typer.Option(help=SCANNER_HELP)] = None,
    difficulty: Annotated[float, typer.Option(help=DIFFICULTY_HELP)] = 0.0,
    ratio: Annotated[str | None, typer.Option(help=RATIO_HELP)] = None,
) -> None:
    """Write a synthetic chest X-ray dataset (no patient data)."""
    args = argparse.Namespace(
        out=out,
        per_class=per_class,
        size=size,
        fmt=fmt.value,
        images_per_patient=images_per_patient,
        seed=seed,
        scanner=scanner.value if scanner else None,
        difficulty=difficulty,
        ratio=ratio,
    )
    raise typer.Exit(run_synth(args))


@app.command("create-key", rich_help_panel=ADMIN)
def create_key_command(
    name: Annotated[str, typer.Option(help="who or what the key is for")],
    role: Annotated[Role, typer.Option()],
) -> None:
    """Issue an API key directly in the database (printed once)."""
    from hilum.db import session_scope
    from hilum.keys import Role as KeyRole
    from hilum.keys import create_key
    from hilum.migrate import upgrade_to_head

    settings = _admin_settings()
    upgrade_to_head(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        _, plain = create_key(session, name=name, role=KeyRole(role.value))
    print(plain)


@weights_app.command("import")
def weights_import(
    path: Annotated[Path, typer.Argument(help="a local .safetensors/.pth ImageNet state dict")],
    backbone: Annotated[str, typer.Option()],
) -> None:
    """Register a local ImageNet state dict as a weights file."""
    raise typer.Exit(import_weights(_admin_settings(), path, backbone))


def import_weights(settings: Settings, path: Path, backbone: str) -> int:
    from hilum.db import session_scope
    from hilum.migrate import upgrade_to_head
    from hilum.storage import Storage
    from hilum.weights import register_weights_file

    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 1
    upgrade_to_head(settings.resolved_database_url)
    storage = Storage(settings.data_dir).ensure()
    try:
        with session_scope(settings.resolved_database_url) as session:
            row = register_weights_file(session, storage, path, filename=path.name, backbone=backbone)
            print(f"registered {path.name} for {backbone}: weights id {row.id} (use it as the job's 'weights')")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """The synth options for `python -m hilum.synth` (argparse; `hilum synth` mirrors them)."""
    parser.add_argument("out", type=Path, help="output folder, or a .zip file")
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--format", dest="fmt", choices=["png", "jpeg", "dicom"], default="png")
    parser.add_argument("--images-per-patient", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scanner", default=None, choices=[s.value for s in ScannerName], help=SCANNER_HELP)
    parser.add_argument("--difficulty", type=float, default=0.0, help=DIFFICULTY_HELP)
    parser.add_argument("--ratio", default=None, help=RATIO_HELP)


def run_synth(args: argparse.Namespace) -> int:
    from pipelines.synthetic import class_counts, parse_ratio, scanner_named, write_dataset, write_zip

    try:
        scanner_named(args.scanner)
        ratio = parse_ratio(args.ratio) if args.ratio else None
        if not 0.0 <= args.difficulty <= 1.0:
            raise ValueError(f"--difficulty must be in [0, 1], got {args.difficulty}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kwargs = dict(
        n_per_class=args.per_class,
        size=args.size,
        fmt=args.fmt,
        seed=args.seed,
        images_per_patient=args.images_per_patient,
        scanner=args.scanner,
        difficulty=args.difficulty,
        ratio=ratio,
    )
    if args.out.suffix == ".zip":
        write_zip(args.out, **kwargs)
    else:
        write_dataset(args.out, **kwargs)
    counts = class_counts(args.per_class, ratio)
    look = f" (scanner {args.scanner})" if args.scanner else ""
    print(f"wrote {sum(counts.values())} synthetic images{look} to {args.out}: {counts}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="hilum")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
