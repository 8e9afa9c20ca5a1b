# Trent's developer commands. `make run` and `make test` work on a fresh Debian 12 machine with Swift:
# they install what is missing first (scripts/install-deps.sh).

VENV := .venv

.PHONY: help deps test-deps bench-deps build run bench test test-swift test-e2e moto-suite crash-test crash-smoke clean

help:
	@echo "make run    build Trent (release) and serve the KMS API on 127.0.0.1:4599 with an embedded SoftHSM token"
	@echo "make bench  build Trent (release) and benchmark it against its HSM and HTTP ceilings and moto (docs/performance.md)"
	@echo "make test   run every test on SoftHSM 2 and on NSS softoken: Swift suites, then the boto3/AWS CLI end-to-end suite"
	@echo "make moto-suite  run moto's own KMS tests (moto 5.2.5) in its server mode against Trent, with the expected failures of Tests/moto"
	@echo "make crash-test  kill -9 the server under load CRASH_CYCLES times per token and check nothing acknowledged was lost (docs/reliability.md)"

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

test: test-deps test-swift test-e2e moto-suite crash-smoke fuzz-smoke

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

# moto's own KMS tests (moto 5.2.5, from its PyPI sdist, cached in .moto-cache) in moto's server mode, each test against
# a fresh Trent (Tests/moto/moto_suite.py); Tests/moto/expected-failures.txt lists the tests that fail and why, and the
# run fails on any other failure or on a listed test that passes. About 1 minute per token; MOTO_TOKENS picks tokens.
MOTO_TOKENS ?= $(TOKENS)
moto-suite: test-deps
	swift build --product trent
	set -e; for token in $(MOTO_TOKENS); do \
		echo "=== moto's KMS tests on $$token ==="; \
		TRENT_E2E_TOKEN=$$token $(VENV)/bin/python Tests/moto/moto_suite.py; \
	done

# Crash consistency under kill -9 (Tests/crash/crash_harness.py, docs/reliability.md): per token, CRASH_CYCLES cycles
# of concurrent load, SIGKILL at a random moment (at most CRASH_SECONDS into the load, or right after a background
# deletion or rotation began), restart on the same data folder, and a check of everything acknowledged so far; then
# kills during `trent token init` and a first `trent serve`. Figures go to crash-results/<token>.json. TRENT_BIN picks
# another binary; CRASH_ARGS passes more options (crash_harness.py --help).
CRASH_CYCLES ?= 50
CRASH_SECONDS ?= 4
CRASH_SEED ?= 1
CRASH_ARGS ?=
CRASH_HARNESS = $(VENV)/bin/python Tests/crash/crash_harness.py --binary "$${TRENT_BIN:-.build/debug/trent}" --seed $(CRASH_SEED)

crash-test: test-deps
	swift build --product trent
	mkdir -p crash-results
	set -e; for token in $(TOKENS); do \
		$(CRASH_HARNESS) --token $$token --cycles $(CRASH_CYCLES) --seconds-per-cycle $(CRASH_SECONDS) --init-kills 20 \
			--json-out crash-results/$$token.json $(CRASH_ARGS); \
	done

# Part of `make test`: 3 cycles per token (a random kill, one during a deletion sweep, one during a rotation), one
# torn audit line written and repaired, and kills during token creation; about 40 s per token.
crash-smoke:
	swift build --product trent
	set -e; for token in $(TOKENS); do \
		$(CRASH_HARNESS) --token $$token --cycles 3 --seconds-per-cycle 2 --threads 3 --keys-per-worker 8 \
			--recheck-sample 100 --torn-every 2 --init-kills 1 --max-minutes 5 $(CRASH_ARGS); \
	done

# Coverage-guided fuzzing of every parser of untrusted bytes (Tests/Fuzz, docs/reliability.md): one libFuzzer +
# AddressSanitizer build in .build-fuzz holding every target. New corpus entries go to .build-fuzz/corpus/<target>,
# crashes, leaks and slow inputs to .build-fuzz/artifacts/<target>/; the committed seeds in Tests/Fuzz/corpus are
# read, never written. FUZZ_TARGETS picks some targets (default: all, from `TrentFuzz --list`).
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_TARGETS ?=
FUZZ_BUILD_FLAGS := -c release --product TrentFuzz --scratch-path .build-fuzz \
	-Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing -Xswiftc -assert-config -Xswiftc Debug -Xswiftc -DTRENT_FUZZING
FUZZ_BIN := .build-fuzz/release/TrentFuzz
# Inputs over 1 s are failures (-timeout); more than 2 GiB resident, or one allocation over 512 MiB, is a crash.
FUZZ_LIBFUZZER_FLAGS := -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=512 -detect_leaks=1 -print_final_stats=1
# Leaks of the toolchain's own libraries, not Trent's (each explained in the file).
FUZZ_ENV := LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Fuzz/lsan.supp

.PHONY: fuzz fuzz-build fuzz-smoke

fuzz-build:
	swift build $(FUZZ_BUILD_FLAGS)

# Each target for FUZZ_SECONDS, one after the other; fails at the end if any target found a crash, leak or slow input.
fuzz: fuzz-build
	$(FUZZ_BIN) --list | { failed=""; while read -r name maxlen summary; do \
		case " $(FUZZ_TARGETS) " in "  ") ;; *" $$name "*) ;; *) continue ;; esac; \
		echo "=== fuzz $$name ($$summary): $(FUZZ_SECONDS) s, -max_len=$$maxlen ==="; \
		mkdir -p .build-fuzz/corpus/$$name .build-fuzz/artifacts/$$name; \
		$(FUZZ_ENV) $(FUZZ_BIN) $$name $(FUZZ_LIBFUZZER_FLAGS) -max_len=$$maxlen -max_total_time=$(FUZZ_SECONDS) \
			-dict=Tests/Fuzz/dict/$$name.dict -artifact_prefix=.build-fuzz/artifacts/$$name/ \
			.build-fuzz/corpus/$$name Tests/Fuzz/corpus/$$name || failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failures in:$$failed (inputs in .build-fuzz/artifacts/<target>/)"; exit 1; fi; }

# Part of `make test`: the committed corpora through the debug replayer (no sanitizer), then every target briefly
# under libFuzzer and ASan (FUZZ_SMOKE_SECONDS each; new corpus entries go to a scratch folder, thrown away).
fuzz-smoke: fuzz-build
	swift build --product TrentFuzz
	.build/debug/TrentFuzz
	$(FUZZ_BIN) --list | while read -r name maxlen summary; do \
		scratch=$$(mktemp -d); mkdir -p .build-fuzz/artifacts/$$name; \
		if $(FUZZ_ENV) $(FUZZ_BIN) $$name $(FUZZ_LIBFUZZER_FLAGS) -max_len=$$maxlen -max_total_time=$(FUZZ_SMOKE_SECONDS) \
			-dict=Tests/Fuzz/dict/$$name.dict -artifact_prefix=.build-fuzz/artifacts/$$name/ \
			$$scratch Tests/Fuzz/corpus/$$name >$$scratch.log 2>&1; then status=0; else status=$$?; fi; \
		echo "fuzz-smoke $$name: $$(grep -E '^#[0-9]+[[:space:]]+DONE' $$scratch.log || echo 'no final stats')"; \
		if [ $$status != 0 ]; then tail -40 $$scratch.log; rm -rf $$scratch $$scratch.log; \
			echo "fuzz-smoke: $$name failed (status $$status); the input is in .build-fuzz/artifacts/$$name/"; exit 1; fi; \
		rm -rf $$scratch $$scratch.log; \
	done

clean:
	rm -rf .build $(VENV) .trent crash-results
