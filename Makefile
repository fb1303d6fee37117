GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X gitlab.com/fleetrunner/fleetrunner/common/version.Version=$(VERSION) -X gitlab.com/fleetrunner/fleetrunner/common/version.Revision=$(REVISION)
BIN       := bin
TEST_TIMEOUT ?= 15m

.PHONY: build test lint bench bench-scaling demo soak clean fuzz

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner ./cmd/fleetrunner
	# The helper binary travels with the manager, one per engine architecture (executors/docker/helperimage).
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner-helper-linux-amd64 ./cmd/fleetrunner-helper
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner-helper-linux-arm64 ./cmd/fleetrunner-helper

# Lint first: it is the cheap failure, and its govet runs go vet's analyzers. .ci/prereqs installs the
# Debian packages the tests use when run as root on Debian, and otherwise prints the command that would.
test: lint
	@.ci/prereqs test
	# -count=1: tests talk to Docker and sshd, whose state Go cannot see, so results are never cached.
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	# In CI every fuzz target also fuzzes for FUZZTIME; elsewhere `go test` replays their seeds and
	# `make fuzz` fuzzes.
	@if [ -n "$$CI" ]; then $(MAKE) --no-print-directory fuzz; fi

# golangci-lint with the checks of .golangci.yml. It is pinned in tools/go.mod, a module of its own, so
# it never enters fleetrunner's dependencies; go tool builds it once and caches the binary.
lint:
	$(GO) tool -modfile=tools/go.mod golangci-lint run ./...

# The main job on an embedded default: simulated GitLab, a local fleet of sshd instances, real Docker.
demo:
	@.ci/prereqs demo
	$(GO) run ./cmd/fleetrunner-demo

# Native fuzz targets as package:Name. go test fuzzes one target per package per run, so `fuzz` runs
# them one after another, each for FUZZTIME, and fails at the end if any target failed. A failing
# input is written to the package's testdata/fuzz/<Name>/, where plain `go test` replays it.
# Go 1.26's fuzz coordinator can fail a run with a bare "context deadline exceeded" when FUZZTIME ends
# while a worker is mid-input, on busy cores (golang/go#75804, fixed in Go 1.27): such a run wrote no
# failing input, so it is reported and not counted as a failure.
FUZZTIME ?= 20s
# go test spends up to 60s minimizing each new input by default, which would eat most of a short run.
FUZZMINIMIZETIME ?= 5s
FUZZ_TARGETS := \
	./common/config:FuzzParse \
	./common/job:FuzzDecode \
	./taskscaler/sim:FuzzReadTrace \
	./taskscaler/state/dynamostate:FuzzDecodeState \
	./common/trace:FuzzMasking \
	./common/s3cache:FuzzObjectName \
	./common/gitlab:FuzzRangeEnd \
	./common/gitlab/gitlabsim:FuzzPatchTraceContentRange \
	./fleeting-plugins/builtin:FuzzConfigure \
	./fleeting-plugins/aws:FuzzParseClaim \
	./fleeting-plugins/aws/awssim:FuzzRequest

fuzz:
	@mkdir -p $(BIN); failed=; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; corpus=$$pkg/testdata/fuzz/$$name; log=$(BIN)/fuzz-$$name.log; \
		before=$$(ls $$corpus 2>/dev/null | wc -l); \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg > $$log 2>&1; rc=$$?; \
		cat $$log; \
		if [ $$rc -ne 0 ]; then \
			if [ "$$(ls $$corpus 2>/dev/null | wc -l)" -eq "$$before" ] && grep -qx '    context deadline exceeded' $$log; then \
				echo "$$name: no failing input was written; the run ended on Go's fuzz deadline race (golang/go#75804), not a failure"; \
			else failed="$$failed $$name"; fi; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed"; exit 1; fi

# The long crash-and-outage soak of the real binary (internal/soak): 20 kill -9 and restarts, a few
# hundred jobs, a minute without GitLab; it prints its figures. FLEETRUNNER_SOAK_SEED=N replays a run.
# Then 20 failovers of a high-availability pair (state_storage backend dynamodb on moto).
soak:
	FLEETRUNNER_SOAK=long $(GO) test -race -count=1 -timeout 25m -run '^TestSoak$$' -v ./internal/soak/
	FLEETRUNNER_SOAK=long $(GO) test -race -count=1 -timeout 25m -run '^TestFailovers$$' -v ./executors/dockerautoscaler/

# The table of issue 13 (internal/bench): each row a figure against the physical limit measured in the
# same run, written with the machine to docs/benchmarks.md. The test log goes to bin/bench.log and the
# table is printed again at the end. `go test ./internal/bench/` runs the same rows in a short profile.
bench:
	@mkdir -p $(BIN)
	@{ FLEETRUNNER_BENCH=full FLEETRUNNER_BENCH_OUT=$(CURDIR)/docs/benchmarks.md $(GO) test -count=1 -timeout 12m -run '^TestBenchTable$$' -v ./internal/bench/ 2>&1; echo $$? >$(BIN)/bench.rc; } | tee $(BIN)/bench.log
	@echo; sed -n '/^== bench table/,/^== end of bench table/p' $(BIN)/bench.log; exit $$(cat $(BIN)/bench.rc)

# The scaling table of issue 14 (internal/bench/scaling): for each trace of testdata/traces, upstream-style
# single policies, the policy `fleetrunner tune` finds and the forecast mode, on the held-out days, and
# whether the goal is met. The log goes to bin/bench-scaling.log and the table is printed again at the end.
bench-scaling:
	@mkdir -p $(BIN)
	@{ FLEETRUNNER_BENCH=full $(GO) test -count=1 -timeout 30m -run '^TestScalingTable$$' -v ./internal/bench/scaling/ 2>&1; echo $$? >$(BIN)/bench-scaling.rc; } > $(BIN)/bench-scaling.log
	@sed -n '/^== scaling table/,/^== end of scaling table/p' $(BIN)/bench-scaling.log; exit $$(cat $(BIN)/bench-scaling.rc)

clean:
	rm -rf $(BIN)
