# `make demo` and `make test` each set up .venv from the pinned constraints on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo
OUT := out/demo

.PHONY: demo test bench lint typecheck clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wetmap sample $(DEMO) --size 1024 --seed 0 --overwrite
	$(BIN)/wetmap tile --config configs/tile.yaml -o $(DEMO)/chips --overwrite
	$(BIN)/wetmap train --config configs/train.yaml --overwrite
	$(BIN)/wetmap predict runs/demo/model.pt $(DEMO)/scene_a.tif $(DEMO)/scene_b.tif \
		--clouds $(DEMO)/scene_a_scl.tif --clouds $(DEMO)/scene_b_scl.tif \
		-o $(OUT)/wetlands.tif --probabilities --vectorize --min-area 0.1 --overwrite
	$(BIN)/wetmap evaluate $(OUT)/wetlands.tif $(DEMO)/labels.tif --regions $(DEMO)/regions.gpkg \
		-o $(OUT)/report --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests benchmarks workflows

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf data/demo runs/demo out/demo
