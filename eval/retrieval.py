"""Image–text retrieval of an exported model: R@1/5/10 both ways, medr, meanr (1K or 5K protocol).

    python eval/retrieval.py --help
"""

import sys

from mmvicreg.evaluation.scripts import script_main

if __name__ == "__main__":
    sys.exit(script_main("retrieval"))
