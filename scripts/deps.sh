#!/usr/bin/env bash
# Installs, from Debian's packages, the real programs duet's tests talk to:
# netcat and telnet (line-protocol users), redis-server (cluster mode),
# chromium (the browser client), htpasswd (accounts files), nginx with
# its stream module (the TLS front), systemd-analyze (the unit file) and
# ip (routes changed in a test's own network namespace). Only what is missing is
# installed, and only when running as root with apt-get; otherwise it
# says what is missing and the tests that need it skip (or fail, under
# the DUET_REQUIRE_* variables that CI sets).
set -euo pipefail

declare -A need=(
  [nc]=netcat-openbsd
  [telnet]=telnet
  [redis-server]=redis-server
  [chromium]=chromium
  [htpasswd]=apache2-utils
  [nginx]=nginx
  [systemd-analyze]=systemd
  [ip]=iproute2
)
missing=()
for cmd in "${!need[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${need[$cmd]}")
  fi
done
# nginx's stream module (the TLS front for the line protocol) is a
# package of its own on Debian.
if [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  missing+=(libnginx-mod-stream)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing ${missing[*]} (install them with apt-get); tests that need them will skip" >&2
fi
