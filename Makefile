# sglang-mla: pinned SGLang + an ordered patch series. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
BENCH_ARGS ?=

.PHONY: help source apply unapply refresh wheel venv test test-slow check-series bench bench-quick bench-series bench-retraction bench-trace clean

help:
	@echo "make apply         apply patches/series onto the pinned upstream (build/work/tree)"
	@echo "make wheel         build dist/sglang-<version>+mla.<N>-py3-none-any.whl from the patched tree"
	@echo "make test          CPU tests: upstream's (when sglang/ is checked out), the patches', the fork's, per-patch bisect"
	@echo "make test-slow     the series' property tests with HYPOTHESIS_PROFILE=slow (5,000 sequences per page size)"
	@echo "make check-series  each patch applies and passes its tests at its point in the series"
	@echo "make bench         pristine vs patched benchmark matrix, writes docs/benchmarks.md"
	@echo "make bench-quick   a small benchmark run (part of make test)"
	@echo "make bench-series  pristine, each series prefix p1..pN, patched; writes docs/bench-series.md"
	@echo "make bench-retraction  r1 retraction over seeds, arrival rates and reservation floors; docs/retraction.md"
	@echo "make bench-trace TRACE=file  a Mooncake-format trace: pristine, patched, clairvoyant eviction, oracle; docs/trace.md"
	@echo "make refresh       export the patched branch's commits back to patches/"
	@echo "make unapply       remove the patched tree;  make clean: remove every generated file"

source:
	bash build/source.sh

apply:
	bash build/apply.sh

unapply:
	bash build/unapply.sh

refresh:
	bash build/refresh.sh

wheel:
	bash build/wheel.sh

venv:
	bash build/venv.sh

test:
	bash build/test.sh

test-slow:
	HYPOTHESIS_PROFILE=slow bash build/test_properties.sh

check-series:
	bash build/check_series.sh

bench:
	bash build/bench.sh $(BENCH_ARGS)

bench-quick:
	bash build/bench.sh --quick $(BENCH_ARGS)

bench-series:
	bash build/bench.sh --series $(BENCH_ARGS)

bench-retraction:
	BENCH_SCRIPT=bench/retraction.py bash build/bench.sh $(BENCH_ARGS)

bench-trace:
	@test -n "$(TRACE)" || { echo "usage: make bench-trace TRACE=path/to/trace.jsonl (Mooncake format: one JSON object per line)" >&2; exit 2; }
	BENCH_SCRIPT=bench/trace_bench.py bash build/bench.sh --trace "$(TRACE)" $(BENCH_ARGS)

clean:
	rm -rf build/work build/venv build/dl dist bench/out
