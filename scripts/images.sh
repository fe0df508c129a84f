#!/usr/bin/env bash
# Builds the images of the compose stack locally; nothing is pulled:
#   edge/nats-server:2.15.1   FROM scratch + the pinned static nats-server (from scripts/setup.sh)
#   edge/orchestrator:dev     FROM scratch + every project binary and the shared libraries they
#                             link (copied from this machine), one image for all services, plus
#                             Prometheus from Debian's package (for the observability profile)
# Set PROFILE=release for optimised binaries (default: the debug build the tests use); the site
# agent (site-manager) then comes from the size-optimized `agent` profile, as shipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=${PROFILE:-debug}
target=${CARGO_TARGET_DIR:-target}
./scripts/setup.sh >/dev/null
if [ "$profile" = release ]; then
  cargo build --workspace --release
  cargo build --profile agent -p site-manager
else
  cargo build --workspace
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

mkdir -p "$ctx/nats/rootfs/bin" "$ctx/nats/rootfs/tmp"
cp .tools/bin/nats-server "$ctx/nats/rootfs/bin/nats-server"
cp docker/nats-server.Dockerfile "$ctx/nats/Dockerfile"
docker build -q -t edge/nats-server:2.15.1 "$ctx/nats" >/dev/null

bins="scheduler secrets registry-sync telemetry site-manager edgectl"
mkdir -p "$ctx/orch/rootfs/bin" "$ctx/orch/rootfs/tmp" "$ctx/orch/rootfs/etc"
for b in $bins; do
  src="$target/$profile/$b"
  if [ "$profile" = release ] && [ "$b" = site-manager ]; then src="$target/agent/$b"; fi
  cp "$src" "$ctx/orch/rootfs/bin/$b"
  # The shared libraries each binary links, at the same paths as on this machine.
  for lib in $(ldd "$src" | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$ctx/orch/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/orch/rootfs$lib"
  done
done
cp .tools/bin/prometheus "$ctx/orch/rootfs/bin/prometheus"
for lib in $(ldd .tools/bin/prometheus | grep -o '/[^ ]*\.so[^ ]*'); do
  mkdir -p "$ctx/orch/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/orch/rootfs$lib"
done
echo "nobody:x:65534:65534:nobody:/:/bin/false" > "$ctx/orch/rootfs/etc/passwd"
# CA certificates, for registry-sync's HTTPS to image registries and OTLP collectors.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$ctx/orch/rootfs/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/orch/rootfs/etc/ssl/certs/ca-certificates.crt"
fi
cp docker/orchestrator.Dockerfile "$ctx/orch/Dockerfile"
docker build -q -t edge/orchestrator:dev "$ctx/orch" >/dev/null
echo "images: edge/nats-server:2.15.1 edge/orchestrator:dev (binaries: $profile)"
