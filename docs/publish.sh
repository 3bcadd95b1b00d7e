#!/usr/bin/env bash
# Copies a study's workdir into DEST (docs/fashion_mnist, docs/cross_dataset)
# as a workdir without checkpoints: config.json, groups.json, results.csv,
# report/, and each finished run's result.json and metrics.jsonl (unfinished
# runs are left out). The copy resumes (docs/fashion_mnist/README.md) and
# re-reports:
#   python -m tfx_jax.report --workdir=DEST
# Usage: docs/publish.sh WORKDIR DEST
set -euo pipefail

src=${1:?usage: docs/publish.sh WORKDIR DEST}
dst=${2:?usage: docs/publish.sh WORKDIR DEST}
[[ -f $src/config.json ]] || { echo "error: $src has no config.json; give the study's --workdir." >&2; exit 2; }

n=0
for result in "$src"/runs/*/result.json; do
  [[ -f $result ]] || continue
  run=$(basename "$(dirname "$result")")
  mkdir -p "$dst/runs/$run"
  cp "$src/runs/$run/result.json" "$dst/runs/$run/"
  # Runs that train nothing (a pretrained base, no_adapt) have no metrics.jsonl.
  [[ -f $src/runs/$run/metrics.jsonl ]] && cp "$src/runs/$run/metrics.jsonl" "$dst/runs/$run/"
  n=$((n + 1))
done
cp "$src/config.json" "$src/groups.json" "$dst/"
[[ -f $src/results.csv ]] && cp "$src/results.csv" "$dst/"
if [[ -d $src/report ]]; then
  rm -rf "$dst/report"
  cp -r "$src/report" "$dst/report"
fi
echo "Published $n finished runs of $src into $dst."
