#!/usr/bin/env bash
# Map one new scene and score it per region: the unit of work a scheduler runs.
#   workflows/map_scene.sh MODEL_BUNDLE SCENE.tif SCL.tif REFERENCE REGIONS.gpkg OUT_DIR
# Exit codes a scheduler can act on: 0 done, 2 bad input (fix the input, do not retry), other = failed.
set -euo pipefail
if [ "$#" -ne 6 ]; then
    echo "usage: $0 MODEL_BUNDLE SCENE.tif SCL.tif REFERENCE REGIONS.gpkg OUT_DIR" >&2
    exit 2
fi
bundle=$1 scene=$2 scl=$3 reference=$4 regions=$5 out=$6
here=$(cd "$(dirname "$0")/.." && pwd)
wetmap=${WETMAP:-$here/.venv/bin/wetmap}
mkdir -p "$out"
"$wetmap" predict "$bundle" "$scene" --clouds "$scl" -o "$out/wetlands.tif" --probabilities --overwrite
"$wetmap" evaluate "$out/wetlands.tif" "$reference" --regions "$regions" -o "$out/report" --overwrite
