#!/usr/bin/env bash
# Make a folder that puts solo-learn (for benchmarks/step_speed.py --solo-learn) on PYTHONPATH without touching the
# environment: its pinned Lightning and small dependencies from PyPI, and the `solo` package of a solo-learn checkout.
#   benchmarks/solo_learn_env.sh SOLO_LEARN_CHECKOUT [TARGET=.solo]
#   PYTHONPATH=$PWD/.solo python benchmarks/step_speed.py --solo-learn
# solo-learn's own requirements pin lightning==2.1.2 and torchmetrics<0.12; torch is the environment's.
set -euo pipefail
checkout=${1:?give a solo-learn checkout (git clone https://github.com/vturrisi/solo-learn)}
target=${2:-.solo}
pip install --quiet --target "$target" --no-deps "lightning==2.1.2" "lightning-utilities" "torchmetrics<0.12" \
    omegaconf "antlr4-python3-runtime==4.9.3" einops "setuptools<70"
cp -r "$checkout/solo" "$target/"
echo "solo-learn ready: PYTHONPATH=$PWD/$target"
