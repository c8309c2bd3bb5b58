#!/usr/bin/env bash
# Installs, from Debian's packages, the real programs duet's tests talk to:
# netcat and telnet (line-protocol users), redis-server (cluster mode),
# chromium (the browser client), htpasswd (accounts files), nginx with
# its stream module (the TLS front), systemd-analyze (the unit file) and
# ip (routes changed in a test's own network namespace). Only what is missing is
# installed, and only when running as root with apt-get, without
# starting the services the packages bring (nginx, redis); otherwise it
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
  # The tests start their own redis-server and nginx on loopback ports:
  # Debian's packages would otherwise start the system's
  # (nginx on :80, redis on :6379) as they install. A policy-rc.d that
  # says no keeps them stopped; one the machine has already is left
  # alone.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# left by duet scripts/deps.sh while it installs; removed after\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing ${missing[*]} (install them with apt-get); tests that need them will skip" >&2
fi
