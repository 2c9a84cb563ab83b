#!/usr/bin/env bash
# Builds the real programs of the observability stack from their published Go modules:
#
#   - an OpenTelemetry Collector with exactly the components collector/otel-collector.yaml
#     uses, by the OpenTelemetry Collector Builder (ocb) from collector/builder-manifest.yaml,
#     at the release of the compose image (otel/opentelemetry-collector-contrib:0.161.0);
#   - Jaeger v2 (cmd/jaeger), pinned below.
#
# Usage:
#   collector/build.sh            # build what is missing, then print the two paths
#   collector/build.sh --paths    # only print the paths (nothing is built or checked)
#
# Binaries go to ${AKTO_OTEL_CACHE:-$HOME/.cache/akto-otel}/bin, outside the checkout;
# a second run reuses them. Each binary's name carries its version (the collector's
# also a hash of the manifest, so a changed component list builds anew). It prints
# how long each build took; its last two lines are exactly
#   otelcol=<absolute path>
#   jaeger=<absolute path>
# Needs Go (1.25+) and the Go module proxy. GOFLAGS from the environment applies
# (e.g. GOFLAGS=-p=1 on a loaded machine). See docs/local-stack.md.
set -euo pipefail

# The collector release; tests/test_stack_collector.py keeps it equal to the manifest's
# module versions and to the compose image tag.
OTELCOL_VERSION=0.161.0
# Jaeger v2 release tags (v2.x.y) are not importable: the module path has no /v2
# suffix, and the Go module proxy answers 403 for @v2.19.0 and for @main (tried
# 2026-12-01). Each Jaeger release commit until v1 ended also carries a v1 tag, and
# that one is a valid module version: v1.75.0 is the commit of the
# "Release v1.75.0 / v2.12.0", i.e. Jaeger 2.12.0. The proxy also serves v1.76.0, but
# that is not an approved release here; v1.75.0 is the newest approved one.
# Keep docker-compose.yml's jaegertracing/jaeger tag equal to JAEGER_RELEASE.
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_MODULE_VERSION=v1.75.0
JAEGER_RELEASE=2.12.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MANIFEST="$HERE/builder-manifest.yaml"
CACHE=${AKTO_OTEL_CACHE:-$HOME/.cache/akto-otel}
case "$CACHE" in /*) ;; *) CACHE="$PWD/$CACHE" ;; esac
MANIFEST_HASH=$(sha256sum "$MANIFEST" | cut -c1-12)
OTELCOL="$CACHE/bin/otelcol-akto-$OTELCOL_VERSION-$MANIFEST_HASH"
JAEGER="$CACHE/bin/jaeger-$JAEGER_RELEASE-$JAEGER_MODULE_VERSION"

print_paths() {
  echo "otelcol=$OTELCOL"
  echo "jaeger=$JAEGER"
}

if [[ "${1:-}" == "--paths" ]]; then
  print_paths
  exit 0
fi
if [[ $# -gt 0 ]]; then
  echo "usage: $0 [--paths]" >&2
  exit 2
fi
command -v go >/dev/null 2>&1 || { echo "build.sh: go not found (Go 1.25+ is needed)" >&2; exit 1; }

mkdir -p "$CACHE/bin" "$CACHE/tools" "$CACHE/work"
# One build at a time per cache (parallel CI jobs, several checkouts).
exec 9>"$CACHE/.build.lock"
flock 9

build_otelcol() {
  local ocb="$CACHE/tools/ocb-$OTELCOL_VERSION/builder" work
  if [[ ! -x "$ocb" ]]; then
    (cd "$CACHE" && GOBIN="$CACHE/tools/ocb-$OTELCOL_VERSION" \
      go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION")
  fi
  work=$(mktemp -d "$CACHE/work/otelcol.XXXXXX")
  # output_path in the manifest is relative: the sources land in the work folder.
  (cd "$work" && "$ocb" --config="$MANIFEST") >"$work/ocb.log" 2>&1 || {
    tail -n 40 "$work/ocb.log" >&2
    return 1
  }
  mv -f "$work/otelcol-akto/otelcol-akto" "$OTELCOL"
  rm -rf "$work"
}

build_jaeger() {
  local src work
  # Build the release module as its own main module, so its go.mod (replace
  # directives included) and go.sum apply exactly as in Jaeger's own release build.
  (cd "$CACHE" && go mod download "$JAEGER_MODULE@$JAEGER_MODULE_VERSION")
  src="$(go env GOMODCACHE)/$JAEGER_MODULE@$JAEGER_MODULE_VERSION"
  work=$(mktemp -d "$CACHE/work/jaeger.XXXXXX")
  cp -r "$src" "$work/src"
  chmod -R u+w "$work/src"
  (cd "$work/src" && GOTOOLCHAIN=local go build -trimpath \
    -ldflags "-s -w -X $JAEGER_MODULE/internal/version.latestVersion=v$JAEGER_RELEASE" \
    -o "$work/jaeger" ./cmd/jaeger)
  mv -f "$work/jaeger" "$JAEGER"
  rm -rf "$work"
}

timed() {
  local name=$1 path=$2 builder=$3 start
  if [[ -x "$path" ]]; then
    echo "$name: cached, 0 s ($path)"
    return
  fi
  start=$(date +%s)
  echo "$name: building (several minutes on a first run; progress every 30 s)"
  # A heartbeat, so a long first build is never silent; ended with the build.
  (while sleep 30; do echo "$name: still building, $(($(date +%s) - start)) s"; done) &
  local heartbeat=$!
  local status=0
  "$builder" || status=$?
  kill "$heartbeat" 2>/dev/null || true
  wait "$heartbeat" 2>/dev/null || true
  if [[ $status -ne 0 ]]; then
    echo "$name: build failed after $(($(date +%s) - start)) s" >&2
    return "$status"
  fi
  echo "$name: built in $(($(date +%s) - start)) s ($path)"
}

timed otelcol "$OTELCOL" build_otelcol
timed jaeger "$JAEGER" build_jaeger
# Both must accept the configs the stack runs (unknown component or field: non-zero
# exit); with the compose defaults, so nothing has to resolve.
"$OTELCOL" validate --config="$HERE/otel-collector.yaml"
# (Jaeger logs its version on every start: shown only when it refuses.)
jaeger_check=$("$JAEGER" validate --config="$HERE/jaeger.yaml" 2>&1) || {
  echo "$jaeger_check" >&2
  exit 1
}
print_paths
