#!/usr/bin/env bash
# Installs duetd as a systemd service: the binary in /usr/local/bin, the
# unit in /etc/systemd/system, the example configuration in
# /etc/duetd/duetd.yaml (an existing one is never overwritten) and the
# operations guide. Safe to run again: it only replaces what it owns.
#
#   scripts/install.sh                 build, install, enable and (re)start
#   scripts/install.sh --dry-run       print what would be done, change nothing
#   DESTDIR=/tmp/root scripts/install.sh
#                                      install under a staging root (packaging,
#                                      tests); systemctl is not called
#   DUETD_BINARY=path scripts/install.sh
#                                      install this binary instead of building
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run|-n) dry=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
destdir=${DESTDIR:-}

run() {
  if [ "$dry" = 1 ]; then
    echo "would run: $*"
  else
    "$@"
  fi
}

binary=${DUETD_BINARY:-}
if [ -z "$binary" ] && [ "$dry" = 1 ]; then
  binary=./duetd
  echo "would run: go build -o $binary ./cmd/duetd"
elif [ -z "$binary" ]; then
  binary=$(mktemp -d)/duetd
  version=$(git describe --always --dirty 2>/dev/null || echo dev)
  run go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$binary" ./cmd/duetd
fi

run install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/systemd/system" \
  "$destdir/etc/duetd" "$destdir/usr/local/share/doc/duetd"
run install -m 0755 "$binary" "$destdir/usr/local/bin/duetd"
run install -m 0644 scripts/duetd.service "$destdir/etc/systemd/system/duetd.service"
run install -m 0644 docs/OPERATIONS.md "$destdir/usr/local/share/doc/duetd/OPERATIONS.md"
if [ -e "$destdir/etc/duetd/duetd.yaml" ]; then
  echo "keeping the existing $destdir/etc/duetd/duetd.yaml"
else
  run install -m 0644 scripts/duetd.yaml "$destdir/etc/duetd/duetd.yaml"
fi

# Only a real install of a running systemd touches the service.
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
  run systemctl enable duetd.service
  if systemctl is-active --quiet duetd.service; then
    run systemctl restart duetd.service
  else
    run systemctl start duetd.service
  fi
else
  echo "not starting the service (DESTDIR set or systemd not running)"
fi
echo "duetd installed${destdir:+ under $destdir}"
