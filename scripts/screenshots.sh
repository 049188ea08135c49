#!/usr/bin/env bash
# Regenerate the screenshots the README links (docs/screenshots/*.png, a 1280x800 viewport each):
# run the browser tests (Debian's Chromium through Playwright, a real server on loopback) with their
# screenshots going to a scratch directory, then copy what they took into docs/screenshots.
#
#   scripts/screenshots.sh                                   # every browser test
#   scripts/screenshots.sh tests/test_console_browser.py     # just these
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ "$#" -eq 0 ]; then
  mapfile -t tests < <(grep -l "from tests.helpers.browser import" tests/test_*.py)
  set -- "${tests[@]}"
fi
VOXGATE_SCREENSHOT_DIR="$scratch" .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
mkdir -p docs/screenshots
shopt -s nullglob
shots=("$scratch"/*.png)
if [ "${#shots[@]}" -eq 0 ]; then
  echo "no screenshots were taken" >&2
  exit 1
fi
cp "${shots[@]}" docs/screenshots/
echo "copied ${#shots[@]} screenshots into docs/screenshots:"
ls -1 docs/screenshots
