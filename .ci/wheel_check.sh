#!/usr/bin/env bash
# The wheel works when installed non-editable: build it, install it into a fresh virtual environment (its
# dependencies taken from the CI's environment), and run the commands that read package data, away from the source.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$repo"
python -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$work"/dist/evar_bench-*.whl
cd "$work"
export EVAR_CACHE_DIR="$work/cache" EVAR_RESULTS_DIR="$work/results"
"$work/venv/bin/python" - <<'PY'
import evar, sys
assert "/venv/" in evar.__file__, f"evar imported from {evar.__file__}, not the installed wheel"
from evar.results.store import append_result
row = {"protocol": "linear", "model": "cnn14", "layers": "", "task": "esc50", "metric": "accuracy", "score": 0.8,
       "std": 0.01, "n_folds": 5, "fold_scores": [[0.8]] * 5, "seeds": [42], "weights": "", "weights_sha256": "",
       "settings": {}}
append_result(row)
PY
"$work/venv/bin/evar" list models > models.txt && grep -q "^byola " models.txt
"$work/venv/bin/evar" list models --cost > cost.txt && grep -q "^byola .* 0.60 " cost.txt
"$work/venv/bin/evar" list tasks > tasks.txt && grep -q "^gtzan " tasks.txt
"$work/venv/bin/evar" leaderboard --format html --out page.html && grep -q '"cnn14"' page.html
"$work/venv/bin/evar" leaderboard --compare-published > board.md
grep -q "90.1" board.md || { cat board.md; echo "wheel check: no published numbers in the leaderboard"; exit 1; }
echo "wheel check: ok ($(basename "$work"/dist/evar_bench-*.whl))"
