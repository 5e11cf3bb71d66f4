"""Weighted k-NN top-1 of an exported model's frozen image features (DINO/VICReg protocol, k = 20 and 200).

    python eval/knn.py --help

The same as ``mmvicreg eval knn ...``: this script only hands its arguments to the command line.
"""

import sys

from mmvicreg.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "knn", *sys.argv[1:]]))
