GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X gitlab.com/fleetrunner/fleetrunner/common/version.Version=$(VERSION) -X gitlab.com/fleetrunner/fleetrunner/common/version.Revision=$(REVISION)
BIN       := bin
TEST_TIMEOUT ?= 15m

.PHONY: build test lint bench demo clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner ./cmd/fleetrunner
	# The helper binary travels with the manager, one per engine architecture (executors/docker/helperimage).
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner-helper-linux-amd64 ./cmd/fleetrunner-helper
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fleetrunner-helper-linux-arm64 ./cmd/fleetrunner-helper

test:
	$(GO) vet ./...
	# -count=1: tests talk to Docker and sshd, whose state Go cannot see, so results are never cached.
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The main job on an embedded default: simulated GitLab, a local fleet of sshd instances, real Docker.
demo:
	$(GO) run ./cmd/fleetrunner-demo

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

clean:
	rm -rf $(BIN)
