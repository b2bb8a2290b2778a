"""The benchmark driver (bench/) is a tool run from the repository root, not an installed package."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
