"""`python -m hilum.synth OUT [--per-class N] ...`: write a synthetic chest X-ray dataset."""

import argparse
import sys

from hilum.cli import add_synth_arguments, run_synth

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m hilum.synth", description=__doc__)
    add_synth_arguments(parser)
    sys.exit(run_synth(parser.parse_args()))
