# Two commands set up a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use. On a CPU machine `pip install torch==2.13.0` takes the CPU
# wheel; a GPU user installs the CUDA build of torch first (see README) and keeps it, since
# the project only asks for torch>=2.4.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo paper-demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[train,judges,clinical,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/boxmed-eval run --model retrieval --dataset demo --out runs/demo-retrieval
	$(BIN)/boxmed-eval report runs/demo-retrieval --out runs/demo-retrieval/report.html

# The paper's experiments on the demo dataset on CPU (not part of `make test`): BoxMed-RL's Table-4
# rows and R2Gen trained, run with retrieval on demo/test, Tables 1/3/4, Figures 5-6, targets.
# One torch thread: on a shared CPU two threads wait on each other (~10x slower, measured).
paper-demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/boxmed-eval reproduce demo --out runs/paper-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) runs .pytest_cache
