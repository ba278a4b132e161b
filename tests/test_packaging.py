"""Project metadata: the license, the pyproject fields a package index shows, and the files they
name reaching the container build (a wheel cannot be built without its readme and license)."""
from __future__ import annotations

import re
import tomllib

from tests.support.server import ROOT


def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_license_is_apache_2_in_pep_639_form():
    meta = project()
    assert meta["license"] == "Apache-2.0"  # an SPDX expression, not a table
    assert not any(c.startswith("License ::") for c in meta["classifiers"])  # PEP 639 forbids both
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_metadata_names_files_that_exist_and_urls():
    meta = project()
    for name in [meta["readme"], *meta["license-files"]]:
        assert (ROOT / name).is_file(), name
    assert {"Homepage", "Source"} <= set(meta["urls"])
    assert "Programming Language :: Python :: 3.12" in meta["classifiers"]


def test_the_image_build_copies_the_files_the_metadata_names():
    builder = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]  # the first stage
    copied = {src for line in re.findall(r"^COPY (?!--from)(.+)$", builder, re.M) for src in line.split()[:-1]}
    meta = project()
    for name in ["pyproject.toml", meta["readme"], *meta["license-files"]]:
        assert name in copied, f"{name} is not copied into the builder stage"
