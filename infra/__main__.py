"""Pulumi entry point (`pulumi up` in infra/): the whole stack is declared by infra.stack."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: infra.*, infra.package

import pulumi

from infra.stack import deploy

for key, value in deploy().items():
    pulumi.export(key, value)
