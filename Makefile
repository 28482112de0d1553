# Tidecast: `make run` and `make test` are all a fresh Debian machine needs.
CARGO ?= cargo
ARGS ?=
FUZZ_SECONDS ?= 10
LATENCY_SECONDS ?= 20
# Stable toolchain: cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets stable accept them.
FUZZ_ENV ?= RUSTC_BOOTSTRAP=1

.PHONY: run build test test-unit test-e2e bench bench-check bench-latency bench-latency-http bench-compare bench-ladder bench-livepeer bench-memory bench-thumbs screenshots soak fuzz fuzz-smoke fuzz-build deps clean

run: ## install what is missing, build, and start the server on embedded defaults
	./scripts/install-deps.sh run
	$(CARGO) build --release --bin tidecast
	./target/release/tidecast serve $(ARGS)

build:
	./scripts/install-deps.sh run
	$(CARGO) build --release --bin tidecast

test: ## the whole suite: unit, end to end, benches in test mode, fuzz smoke runs
	./scripts/install-deps.sh test
	./scripts/install-deps.sh fuzz
	RUST_TEST_THREADS=2 $(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) fuzz-smoke

test-unit: ## fast: library unit tests only
	./scripts/install-deps.sh run
	$(CARGO) test --workspace --lib

test-e2e: ## slow: the end-to-end tests with real ffmpeg peers
	./scripts/install-deps.sh test
	$(CARGO) test --test 'e2e_*'

bench: ## run the criterion suites (numbers go to docs/benchmarks.md by hand)
	$(CARGO) bench -p tidecast-bench

bench-latency: ## WebRTC glass-to-glass latency, Tidecast against a direct browser connection
	./bench/webrtc-latency.sh $(LATENCY_SECONDS)

bench-latency-http: ## LL-HLS (hls.js) and LL-DASH (dash.js) glass-to-glass latency from one WHIP publisher
	./bench/webrtc-latency.sh $(or $(LATENCY_SECONDS),30) hls,dash

bench-compare: ## Tidecast against nginx-rtmp and xiu, same clip and load, ratios (docs/benchmarks.md)
	./bench/compare.sh

bench-ladder: ## CPU of a 3-rung ladder against the ffmpeg CLI doing the same, and the delay it adds to LL-HLS (docs/benchmarks.md)
	./scripts/install-deps.sh bench
	./bench/ladder.sh

bench-livepeer: ## how far Livepeer renditions trail the source, with the test's stand-in gateway (docs/benchmarks.md)
	./scripts/install-deps.sh test
	$(CARGO) test --test e2e_livepeer livepeer_rendition_delay -- --ignored --nocapture

bench-memory: ## RSS one live stream adds, against the media bytes its windows hold (docs/benchmarks.md)
	./bench/memory.sh

bench-thumbs: ## what thumbnails and clips cost the server while a stream runs (docs/benchmarks.md)
	./bench/thumbs.py

screenshots: ## docs/screenshots: the player page and the dashboard, from the browser tests
	mkdir -p docs/screenshots
	PLAYER_SCREENSHOT=$(CURDIR)/docs/screenshots/player.png DASHBOARD_SCREENSHOT=$(CURDIR)/docs/screenshots/dashboard.png \
		$(CARGO) test --test e2e_web -- --test-threads 1

soak: ## long mixed load (MINUTES=30, 10 streams, 200 viewers): RSS, fds, threads every 10 s (docs/benchmarks.md)
	./scripts/install-deps.sh test
	./bench/soak.sh

# `make test` already runs every criterion benchmark once in test mode
# (`--all-targets` takes the bench targets, built with the tests); this
# runs them once more from an optimised build.
bench-check: ## each criterion benchmark once, as a test, from a release build
	$(CARGO) bench -p tidecast-bench -- --test

fuzz-build:
	cd fuzz && $(FUZZ_ENV) $(CARGO) fuzz build

fuzz-smoke: fuzz-build ## every fuzz target for FUZZ_SECONDS, from its seed corpus
	./scripts/fuzz-smoke.sh $(FUZZ_SECONDS)

fuzz: ## long runs: make fuzz TARGET=rtmp_session FUZZ_SECONDS=3600
	./scripts/install-deps.sh fuzz
	cd fuzz && $(FUZZ_ENV) $(CARGO) fuzz run $(TARGET) -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
