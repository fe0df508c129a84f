# Edge orchestrator: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
EDGECTL := target/debug/edgectl

.PHONY: setup build demo down test unit schemas fmt lint bench images compose-up compose-down

## Install what is missing (pinned nats-server into .tools/, the workload images).
setup:
	./scripts/setup.sh

build:
	$(CARGO) build --workspace

## Run the whole stack locally, apply the example app, show where it runs.
demo: setup build
	./scripts/demo.sh

## Stop the demo stack and remove its containers and state.
down:
	$(EDGECTL) dev down

## The whole suite: unit, schema drift and end-to-end tests (real nats-server, real Docker).
test: setup build
	$(CARGO) test --workspace --no-fail-fast

## Fast tests only (no Docker, no nats-server).
unit:
	$(CARGO) test --workspace --lib

## Regenerate schemas/*.json from the Rust types.
schemas:
	UPDATE_SCHEMAS=1 $(CARGO) test -p edge-types --lib schema::tests::committed_schemas_match_types

## Build the compose stack's images locally (nothing is pulled).
images:
	./scripts/images.sh

## The same stack in containers: hub, services, two sites on their own networks.
compose-up: images
	./scripts/compose-auth.sh
	docker-compose up -d

## Stop the compose stack, drop its volumes, and remove the containers its sites ran.
compose-down:
	docker-compose down -v
	ids=$$(docker ps -aq --filter label=io.edge.site=site-1 --filter label=io.edge.host=host-1); [ -z "$$ids" ] || docker rm -f $$ids
	ids=$$(docker ps -aq --filter label=io.edge.site=site-2 --filter label=io.edge.host=host-1); [ -z "$$ids" ] || docker rm -f $$ids
	nets=$$(docker network ls -q --filter label=io.edge.site=site-1; docker network ls -q --filter label=io.edge.site=site-2); [ -z "$$nets" ] || docker network rm $$nets

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks (loadtests/, figures in docs/benchmarks.md): one table, each figure beside its ceiling.
## The service binaries are built first (release; the site agent with the size-optimized `agent`
## profile, as shipped): the rollout and footprint scenarios run them.
bench: setup
	$(CARGO) build --release -p scheduler -p secrets -p telemetry -p registry-sync
	$(CARGO) build --profile agent -p site-manager
	$(CARGO) run --release -p loadtests -- $(BENCH_ARGS)
