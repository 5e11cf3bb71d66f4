"""The published linear evaluation (or 1%/10% fine-tuning) of an exported model: ``mmvicreg eval linear``."""

import sys

from mmvicreg.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "linear", *sys.argv[1:]]))
