#!/usr/bin/env bash
# Makes the compose stack's authority and credentials, once, in EDGE_AUTH_DIR (default
# .edge-compose/auth): the operator and accounts (hub-auth.conf for the hub), a credential per
# central service, the hub's leafnode TLS certificate, and the bundles of site-1 and site-2. Safe to run again: what exists is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${EDGE_AUTH_DIR:-$root/.edge-compose/auth}
edgectl=${EDGECTL:-$root/target/debug/edgectl}
if [ ! -x "$edgectl" ]; then
  (cd "$root" && cargo build -q -p edgectl)
fi
"$edgectl" --auth-dir "$dir" auth init >/dev/null
for user in scheduler secrets registry-sync telemetry; do
  "$edgectl" --auth-dir "$dir" auth user "$user" >/dev/null
done
# The hub's leafnode certificate, for the names the sites dial (compose service `hub`).
"$edgectl" --auth-dir "$dir" auth tls --name hub --name localhost --name 127.0.0.1 >/dev/null
for site in site-1 site-2; do
  "$edgectl" --auth-dir "$dir" site add "$site" >/dev/null
done
echo "compose auth: $dir (edgectl --auth-dir $dir ...)"
