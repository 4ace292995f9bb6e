# rfunc — build, run and test. Every target does its own set-up (apt packages, server binaries).
SHELL := /bin/bash
.DEFAULT_GOAL := build

PORT ?= 6379
SERVERS := .cache/servers
VALKEY_SERVER ?= $(CURDIR)/$(SERVERS)/9.1.2/valkey-server
MODULE := target/release/librfunc.so
VERSIONS := 8.0.1 8.1.8 9.1.2

.PHONY: setup build run test test-unit test-integration test-all lint fmt clean bench

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release

# Start the default server in the foreground with the module and the settings of module.conf.example.
run: build
	$(VALKEY_SERVER) module.conf.example --port $(PORT) --bind 127.0.0.1

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test-unit: setup
	cargo test -p rfunc-core -p rfunc-lua-sys

# Integration tests run against a build with the test-only hooks (RFUNC.TESTPANIC).
test-integration: setup
	cargo build --release --features test-hooks
	VALKEY_SERVER=$(VALKEY_SERVER) cargo test -p rfunc

test: lint test-unit test-integration

# The integration tests against every supported server version in turn.
test-all: setup
	cargo build --release --features test-hooks
	@set -e; for v in $(VERSIONS); do \
	  echo "=== Valkey $$v ==="; \
	  VALKEY_SERVER=$(CURDIR)/$(SERVERS)/$$v/valkey-server cargo test -p rfunc; \
	done

fmt:
	cargo fmt --all

clean:
	cargo clean

# RFUNC.FCALL vs the built-in FCALL on one server, as ratios (BENCH_SECONDS, BENCH_ROUNDS tune it).
bench: build
	VALKEY_SERVER=$(VALKEY_SERVER) python3 scripts/bench.py
