"""Linear-probe top-1 of an exported model's frozen image features.

    python eval/linear_probe.py --help
"""

import sys

from mmvicreg.evaluation.scripts import script_main

if __name__ == "__main__":
    sys.exit(script_main("linear-probe"))
