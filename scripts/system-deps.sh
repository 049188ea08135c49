#!/usr/bin/env bash
# Install the Debian packages voxgate needs: PostgreSQL (the test suite's second database),
# Chromium for browser tests, Redis and HAProxy for the cluster tests, caller voices for voice tests (flite, espeak-ng) and recorded human speech (pocketsphinx-testdata).
# Runs apt only when something is missing; needs root for that.
set -euo pipefail

need=()
command -v python3.11 >/dev/null 2>&1 || need+=(python3.11)
python3.11 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3.11-venv)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
# simulated callers speak with voices other than the agent's, and ASR tests use real human speech
command -v flite >/dev/null 2>&1 || need+=(flite)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ -d /usr/share/pocketsphinx/test/data ] || need+=(pocketsphinx-testdata)
# the cluster tests: live state in a throwaway Redis, workers behind HAProxy
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# console and desk tests drive Debian's Chromium through Playwright (never `playwright install`)
[ -x /usr/lib/chromium/chromium ] || need+=(chromium fonts-dejavu-core)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} — install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
