#!/usr/bin/env bash
# Build the tests' Kubernetes control plane from the Go module proxy (no prebuilt binaries
# can be downloaded here): kube-apiserver, kube-controller-manager and kube-scheduler from
# the published k8s.io/kubernetes module, etcd from go.etcd.io/etcd/server/v3, and KWOK.
# Versions: infra/k8s/testenv/versions.env; the wrapper modules (and their go.sum, which
# pins every module's hash: the checksum database cannot be reached) beside it.
# Idempotent: the binaries are cached under ~/.cache/zixly/kube/<version>/bin and rebuilt
# only when a version or a go.mod/go.sum changes. Cold: about 15-20 minutes on 2 cores.
#
#   ci-setup-kube.sh             build (or find cached) and return
#   ci-setup-kube.sh --start     start that in the background (log: <cache>/build.log), so
#                                that it overlaps the n8n installs; then
#   ci-setup-kube.sh --wait      wait for it and fail if it failed
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${ZIXLY_KUBE_CACHE:-$HOME/.cache/zixly/kube}"
case "${1:-}" in
  --start)
    mkdir -p "$CACHE"
    nohup bash "$0" > "$CACHE/build.log" 2>&1 < /dev/null &
    echo $! > "$CACHE/build.pid"
    echo "building the Kubernetes test control plane in the background (log: $CACHE/build.log)"
    exit 0 ;;
  --wait)
    pid="$(cat "$CACHE/build.pid" 2>/dev/null || true)"
    if [ -n "$pid" ]; then
      while kill -0 "$pid" 2>/dev/null; do sleep 2; done
    fi
    cat "$CACHE/build.log" 2>/dev/null | grep -v '^go: downloading' || true
    exec bash "$0" ;;  # cached now (prints so), or builds here if the background one failed
esac
mkdir -p "$CACHE"
exec 9> "$CACHE/.lock"
flock 9  # one build at a time (a background one, a second checkout)
TESTENV=infra/k8s/testenv
# shellcheck source=/dev/null
. "$TESTENV/versions.env"
ROOT="$CACHE/$KUBE_VERSION"
BIN="$ROOT/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)
want="$(find "$TESTENV" -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)"

cached=yes
for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || cached=no; done
if [ "$cached" = yes ] && [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "kubernetes test control plane: cached in $BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build the Kubernetes test control plane" >&2; exit 1; }
export GOFLAGS=-mod=mod GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
mkdir -p "$BIN" "$ROOT/src"
started=$(date +%s)

# The version the binaries report (a build from the module has no git tree to read it from).
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
KUBE_STAMP=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KUBE_STAMP="$KUBE_STAMP -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  KUBE_STAMP="$KUBE_STAMP -X $pkg.gitTreeState=clean"
done

build() {  # build <wrapper> <binary> <package>
  local wrapper=$1 binary=$2 package=$3 t0 flags="-s -w"
  t0=$(date +%s)
  [ "$wrapper" = kube ] && flags="$flags $KUBE_STAMP"
  rm -rf "$ROOT/src/$wrapper" && cp -r "$TESTENV/$wrapper" "$ROOT/src/$wrapper"
  (cd "$ROOT/src/$wrapper" && go build -trimpath -ldflags="$flags" -o "$BIN/.$binary.new" "$package")
  mv "$BIN/.$binary.new" "$BIN/$binary"
  echo "built $binary in $(( $(date +%s) - t0 )) s"
}

build etcd etcd .
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
echo "$want" > "$BIN/.stamp"
echo "kubernetes test control plane built in $(( $(date +%s) - started )) s into $BIN"
