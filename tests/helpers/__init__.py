"""Shared test material: reference implementations, tiny configs and models, test-only views of the data
package's sources (``sources.py``), subprocess entry points.

A package (``tests.helpers``), imported as ``from tests.helpers.reference import ...``; the two scripts run as
``python -m tests.helpers.dist_worker`` / ``python -m tests.helpers.offline_build`` from the repository root.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
