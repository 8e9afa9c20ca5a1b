# Trent's developer commands. `make run` and `make test` work on a fresh Debian 12 machine with Swift:
# they install what is missing first (scripts/install-deps.sh).

VENV := .venv

.PHONY: help deps test-deps bench-deps build run bench test test-swift test-e2e clean

help:
	@echo "make run    build Trent (release) and serve the KMS API on 127.0.0.1:4599 with an embedded SoftHSM token"
	@echo "make bench  build Trent (release) and benchmark it against its HSM and HTTP ceilings and moto (docs/performance.md)"
	@echo "make test   run every test on SoftHSM 2 and on NSS softoken: Swift suites, then the boto3/AWS CLI end-to-end suite"

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --test

bench-deps:
	./scripts/install-deps.sh --bench

build: deps
	swift build -c release --product trent

run: build
	.build/release/trent serve

# Starts its own server (fresh token and store in a temporary folder), the HTTP ceiling server and moto, then
# writes bench-results/<time>/results.{json,md}. Pass options with BENCH_ARGS, e.g. BENCH_ARGS="--duration 10".
BENCH_ARGS ?=
bench: build bench-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" .build/release/trent bench --compare $(BENCH_ARGS)

test: test-deps test-swift test-e2e

# Every suite runs on both tokens; each run makes its tokens from scratch in folders of its own.
TOKENS := softhsm2 nss-softoken

test-swift:
	swift build --build-tests
	set -e; for token in $(TOKENS); do \
		echo "=== Swift suites on $$token ==="; \
		TRENT_TEST_HSM_PROFILE=$$token swift test; \
	done

# Starts the debug `trent` binary on free ports with its own token folders and drives it with boto3 and the AWS CLI.
test-e2e:
	swift build --product trent
	set -e; for token in $(TOKENS); do \
		echo "=== end-to-end suite on $$token ==="; \
		TRENT_E2E_TOKEN=$$token PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest Tests/e2e; \
	done

clean:
	rm -rf .build $(VENV) .trent
