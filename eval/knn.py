"""Weighted k-NN top-1 of an exported model's frozen image features (DINO/VICReg protocol, k = 20 and 200).

    python eval/knn.py --help
"""

import sys

from mmvicreg.evaluation.scripts import script_main

if __name__ == "__main__":
    sys.exit(script_main("knn"))
