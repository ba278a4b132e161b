#!/usr/bin/env bash
# Install the published REST-era Python SDK releases whose own test suites run against this
# server (tests/test_legacy_sdk_suites.py): the sdists of resonate-sdk 0.1.31 and 0.6.7 from PyPI
# (their tests/ directories ship only in the sdists; checked against their PyPI sha256, never
# edited), unpacked into tests/legacy/.venv/sdist/, and one venv per release,
# tests/legacy/.venv/<version>, with only what its store suites import, pinned to the versions of
# the release's own lockfile (requirements-dev.lock, uv.lock). Everything lives under one
# git-ignored `.venv` directory, which the repository's tools already skip. Python: .ci/find-python
# (>= 3.12, as 0.6.7 requires; 0.1.31 runs on it too).
# Idempotent: does nothing when both releases are installed as pinned here.
set -euo pipefail
cd "$(dirname "$0")"
BASE="$(pwd)/.venv"

# version | sdist sha256 | the suites' imports and their dependencies, as the release locked them |
# the suite files (collected once installed, to check the imports)
RELEASES=(
  "0.1.31|a09b14fc8de1427613f6e61b4df8869b3b3eedac3d0407bb05d8eefd92a53e07|pytest==8.3.2 iniconfig==2.0.0 packaging==24.1 pluggy==1.5.0 requests==2.32.3 certifi==2024.8.30 charset-normalizer==3.3.2 idna==3.8 urllib3==2.2.2 typing-extensions==4.12.2|tests/test_promise_storage.py"
  "0.6.7|c122759f61cebdf4f3f19347ab81745098f3ab69024e23676c64822015f31dbc|pytest==8.4.2 iniconfig==2.1.0 packaging==25.0 pluggy==1.6.0 pygments==2.19.2 croniter==6.0.0 python-dateutil==2.9.0.post0 pytz==2025.2 six==1.17.0 jsonpickle==4.1.1 requests==2.32.5 certifi==2025.7.9 charset-normalizer==3.4.2 idna==3.10 urllib3==2.5.0|tests/test_store_promise.py tests/test_store_schedules.py tests/test_store_task.py"
)

PYTHON=""
python_for_venvs() {
  if [ -z "$PYTHON" ]; then
    PYTHON="$(bash ../../.ci/find-python)" || { echo "install_legacy: no Python >= 3.12 found (.ci/find-python)" >&2; exit 1; }
  fi
  echo "$PYTHON"
}

for release in "${RELEASES[@]}"; do
  IFS='|' read -r version sha256 pins suites <<<"$release"
  venv="$BASE/$version"
  src="$BASE/sdist/resonate_sdk-$version"
  stamp="$venv/.install-stamp"
  want="resonate-sdk==$version sha256:$sha256 $pins"
  if [ -x "$venv/bin/python" ] && [ -d "$src/tests" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "install_legacy: resonate-sdk $version up to date ($("$venv/bin/python" --version), $("$venv/bin/python" -m pytest --version 2>&1))"
    continue
  fi
  echo "install_legacy: resonate-sdk $version: new venv $venv ($(python_for_venvs))..."
  rm -rf "$venv" "$src"
  mkdir -p "$BASE/sdist"
  "$(python_for_venvs)" -m venv "$venv"
  echo "install_legacy: resonate-sdk $version: downloading its sdist from PyPI..."
  dl="$venv/download"
  mkdir "$dl"
  echo "resonate-sdk==$version --hash=sha256:$sha256" >"$dl/requirements.txt"
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
    --require-hashes -r "$dl/requirements.txt" -d "$dl"
  tar -xzf "$dl/resonate_sdk-$version.tar.gz" -C "$BASE/sdist"
  rm -rf "$dl"
  echo "install_legacy: resonate-sdk $version: installing $pins..."
  # shellcheck disable=SC2086  # one argument per pin
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $pins
  echo "install_legacy: resonate-sdk $version: collecting $suites..."
  # shellcheck disable=SC2086
  (cd "$src" && env -u RESONATE_STORE_URL -u RESONATE_HOST PYTHONPATH=src "$venv/bin/python" -m pytest -q \
    -p no:cacheprovider --collect-only $suites | tail -1)
  echo "$want" >"$stamp"
  echo "install_legacy: resonate-sdk $version ready: $src, $("$venv/bin/python" --version), $("$venv/bin/python" -m pytest --version 2>&1)"
done
