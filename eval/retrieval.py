"""Image–text retrieval of an exported model: R@1/5/10 both ways, medr, meanr (1K or 5K protocol).

    python eval/retrieval.py --help

The same as ``mmvicreg eval retrieval ...``: this script only hands its arguments to the command line.
"""

import sys

from mmvicreg.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "retrieval", *sys.argv[1:]]))
