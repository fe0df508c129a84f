#!/usr/bin/env bash
# The demo: start the dev stack (hub, three sites, all services) as local processes, apply
# examples/hello.yaml (placed on customer = acme), wait until it runs, and show where.
set -euo pipefail
cd "$(dirname "$0")/.."
edgectl=target/debug/edgectl

if [ -f .edge/state.json ]; then
  echo "demo: stopping the previous dev stack"
  $edgectl dev down
fi
$edgectl dev up --sites 3   # also pushes edge/busybox:v1 and :v2 into the image store
echo
echo "\$ edgectl image list"
$edgectl image list
echo
echo "\$ edgectl site list"
$edgectl site list
echo
echo "\$ edgectl app apply -f examples/hello.yaml"
$edgectl app apply -f examples/hello.yaml
for _ in $(seq 1 60); do
  running=$($edgectl app list -o json | python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin)["apps"] if x["name"]=="hello"]; print(a[0]["sites_running"] if a else 0)')
  [ "$running" = 2 ] && break
  sleep 1
done
echo
echo "\$ edgectl app status hello"
$edgectl app status hello
echo
echo "Containers of hello on this Docker Engine (site = label io.edge.site):"
docker ps --filter label=io.edge.app=hello --format 'table {{.Names}}\t{{.Label "io.edge.site"}}\t{{.Label "io.edge.image"}}\t{{.Status}}'
echo
echo "Try: $edgectl site label site-3 customer=acme   (hello moves onto site-3)"
echo "Stop everything with: make down   (or $edgectl dev down)"
