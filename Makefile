# Backstop's one task runner: the README and CI call these targets.
#   make demo   installs what is missing, then runs a protected deploy on the local default
#   make test   installs what is missing, then runs every test, linter and validator
#   make validate  the SAM template, the state machine and the roles, offline (part of make test)
#   make test-deployed  the deployed stack run on ministack (part of make test)
#   make bench  the benchmarks (throughput ratios, peak RSS, state transitions)

SHELL := /bin/bash
.DEFAULT_GOAL := test
VENV := .venv
REQS := requirements-dev.txt
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum $(REQS) 2>/dev/null | cut -c1-16)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# One feature set for every debug build: each cargo command selects the whole workspace with its
# dev targets, so the demo, the tests and the function binaries share one build of the AWS SDK
# crates (`make demo` after `make test`, or the reverse, rebuilds none of them).
DEV_BUILD := $(CARGO) build --workspace --bins --examples

.PHONY: setup postgres venv venv-deployed build sam-build validate demo test test-deployed lint unit bench bench-transitions clean

setup: postgres venv

# Debian's PostgreSQL server and client tools (initdb, pg_dump, pg_restore, pgbench), and the
# zstd command the tests read a dump with by hand, as the README tells operators to.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v runuser >/dev/null \
			|| ! command -v zstd >/dev/null; then \
		echo "installing PostgreSQL and zstd from Debian"; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			postgresql postgresql-contrib util-linux zstd; \
	fi

# The deployed-stack run's emulator (ministack, with the SAM transform) and its awscli, pinned,
# in a venv of their own: ministack pins a botocore that moto's does not agree with.
DEPLOYED_VENV := .venv-deployed
DEPLOYED_REQS := tests/deployed/requirements.txt
DEPLOYED_STAMP := $(DEPLOYED_VENV)/.installed-$(shell sha256sum $(DEPLOYED_REQS) 2>/dev/null | cut -c1-16)

venv-deployed: $(DEPLOYED_STAMP)

$(DEPLOYED_STAMP): $(DEPLOYED_REQS)
	python3 -m venv $(DEPLOYED_VENV)
	$(DEPLOYED_VENV)/bin/pip install -q --disable-pip-version-check -r $(DEPLOYED_REQS)
	rm -f $(DEPLOYED_VENV)/.installed-*
	touch $@

# moto server, awscli and the SAM tools, pinned, in .venv.
venv: $(VENV_STAMP)

$(VENV_STAMP): $(REQS)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r $(REQS)
	rm -f $(VENV)/.installed-*
	touch $@

# The Lambda bundles: sam build runs cargo-lambda (release, --arm64, zig as the linker) in each
# function's crate; .venv/bin on PATH is where cargo-lambda and zig are. Needs the
# aarch64-unknown-linux-gnu Rust target, added with rustup when missing. `make sam-build` is the
# same target.
build: venv
	@rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam build --template template.yaml

sam-build: build

# template.yaml and statemachine/protect.asl.json, offline and without credentials: with --lint,
# sam validate runs cfn-lint in-process on the transformed template and calls no AWS API (the
# basic check without --lint would create an IAM client, used only to resolve managed policy
# names, which this template does not use); the region only selects cfn-lint's resource specs.
validate: venv
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(VENV)/bin/sam validate --lint --template template.yaml
	$(VENV)/bin/cfn-lint template.yaml examples/pipeline.yaml
	$(VENV)/bin/statelint statemachine/protect.asl.json
	$(VENV)/bin/python tests/iam/check_roles.py

demo: setup
	$(DEV_BUILD)
	$(TARGET_DIR)/debug/examples/demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: setup lint validate
	$(CARGO) test --workspace --all-targets
	$(MAKE) test-deployed

# The deployed stack run for real: template.yaml deployed by ministack's CloudFormation with the
# SAM transform, the functions' real bootstrap binaries (x86_64 debug builds) under its Lambda
# Runtime API with IAM enforced, a passing and a restored failing deploy through the deployed
# state machine against a throwaway PostgreSQL, and each function's cold init measured.
test-deployed: postgres venv-deployed
	$(DEV_BUILD)
	$(DEPLOYED_VENV)/bin/python tests/deployed/run_deployed.py --repo $(CURDIR)

bench: setup bench-transitions
	$(CARGO) build --release --bin backstop
	bash bench/run.sh

# Step Functions state transitions of one protected deploy whose snapshots take 30 minutes:
# the real ASL on moto with a virtual clock (bench/moto-virtual-clock), Backstop's wait
# schedule side by side with backoff alone and a fixed 15 s poll.
bench-transitions: setup
	$(DEV_BUILD)
	$(TARGET_DIR)/debug/examples/transitions

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(DEPLOYED_VENV)
