"""The `hilum` command: run the service, generate synthetic data, manage keys, migrate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hilum.settings import Settings, get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hilum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the API, a worker and (without REDIS_URL) an embedded Redis")
    sub.add_parser("worker", help="start only this host's workers (one per GPU) against the shared REDIS_URL")
    sub.add_parser("migrate", help="apply database migrations")
    synth = sub.add_parser("synth", help="write a synthetic chest X-ray dataset")
    add_synth_arguments(synth)
    key = sub.add_parser("create-key", help="issue an API key")
    key.add_argument("--name", required=True)
    key.add_argument("--role", choices=["admin", "staff", "clinician"], required=True)
    weights = sub.add_parser("weights", help="pretrained weights files for air-gapped sites")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    imp = weights_sub.add_parser("import", help="register a local .safetensors/.pth ImageNet state dict")
    imp.add_argument("path", type=Path)
    imp.add_argument("--backbone", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = get_settings()
    if args.command == "run":
        from hilum.launcher import run

        return run(settings)
    if args.command == "worker":
        from hilum.launcher import run_workers

        return run_workers(settings)
    if args.command == "migrate":
        from hilum.migrate import upgrade_to_head

        upgrade_to_head(settings.resolved_database_url)
        return 0
    if args.command == "synth":
        return run_synth(args)
    if args.command == "create-key":
        from hilum.db import session_scope
        from hilum.keys import Role, create_key
        from hilum.migrate import upgrade_to_head

        upgrade_to_head(settings.resolved_database_url)
        with session_scope(settings.resolved_database_url) as session:
            _, plain = create_key(session, name=args.name, role=Role(args.role))
        print(plain)
        return 0
    if args.command == "weights":
        return import_weights(settings, args.path, args.backbone)
    return 2


def import_weights(settings: Settings, path: Path, backbone: str) -> int:
    from hilum.db import session_scope
    from hilum.migrate import upgrade_to_head
    from hilum.storage import Storage
    from hilum.weights import register_weights_file

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
    parser.add_argument("out", type=Path, help="output folder, or a .zip file")
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--format", dest="fmt", choices=["png", "jpeg", "dicom"], default="png")
    parser.add_argument("--images-per-patient", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)


def run_synth(args: argparse.Namespace) -> int:
    from pipelines.synthetic import write_dataset, write_zip

    kwargs = dict(
        n_per_class=args.per_class,
        size=args.size,
        fmt=args.fmt,
        seed=args.seed,
        images_per_patient=args.images_per_patient,
    )
    if args.out.suffix == ".zip":
        write_zip(args.out, **kwargs)
    else:
        write_dataset(args.out, **kwargs)
    print(f"wrote {2 * args.per_class} synthetic images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
