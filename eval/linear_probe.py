"""Linear-probe top-1 of an exported model's frozen image features.

    python eval/linear_probe.py --help

The same as ``mmvicreg eval linear-probe ...``: this script only hands its arguments to the command line.
"""

import sys

from mmvicreg.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "linear-probe", *sys.argv[1:]]))
