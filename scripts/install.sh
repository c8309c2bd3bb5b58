#!/usr/bin/env bash
# Installs duetd as a systemd service: the binary in /usr/local/bin, the
# unit in /etc/systemd/system, the duetd system user (sysusers.d), the
# example configuration in /etc/duetd/duetd.yaml, readable by root and
# the duetd group only (an existing one is never overwritten), and the
# guides in docs/ with the files they link to. Safe to run again: it
# only replaces what it owns.
#
#   scripts/install.sh                 build, install, enable and (re)start
#   scripts/install.sh --dry-run       print every command a real run would
#                                      run, and run none
#   DESTDIR=/tmp/root scripts/install.sh
#                                      install under a staging root (packaging,
#                                      tests); no user is created, systemctl is
#                                      not called
#   DUETD_BINARY=path scripts/install.sh
#                                      install this binary instead of building
set -euo pipefail
# DESTDIR, DUETD_BINARY and the script's own name are the caller's
# paths: made absolute before the script moves to the clone for its own
# files, so that a relative one means what it meant where it was run.
absolute() { case "$1" in ""|/*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
DESTDIR=$(absolute "${DESTDIR:-}")
DUETD_BINARY=$(absolute "${DUETD_BINARY:-}")
self=$(absolute "$0")
cd "$(dirname "$0")/.."

dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run|-n) dry=1 ;;
    -h|--help) sed -n '2,17p' "$self"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
destdir=${DESTDIR:-}

# run prints a command, quoted so that it can be pasted into a shell, and
# runs it unless this is a dry run: a dry run prints exactly the commands
# a real run would run, in the same order.
run() {
  local quoted
  quoted=$(printf ' %q' "$@")
  if [ "$dry" = 1 ]; then
    echo "would run:$quoted"
  else
    echo "+$quoted"
    "$@"
  fi
}

binary=${DUETD_BINARY:-}
if [ -z "$binary" ] && ! command -v go >/dev/null; then
  # A server often has no Go, and Debian's own golang-go is older than
  # go.mod asks for: say both ways out rather than "go: command not found".
  echo "install.sh: no go command to build duetd with: install Go $(sed -n 's/^go //p' go.mod) or later (https://go.dev/dl/), or build duetd elsewhere and run DUETD_BINARY=path/to/duetd scripts/install.sh" >&2
  exit 1
fi
if [ -z "$binary" ]; then
  # A clone owned by another user than root, which runs this, is one git
  # refuses to read ("dubious ownership"): this one is trusted for the
  # one command, which changes nothing.
  if ! version=$(git -c safe.directory="$PWD" describe --always --dirty 2>/dev/null); then
    version=dev
    echo "install.sh: git could not say which version this is (not a clone of the repository?); building it as \"dev\"" >&2
  fi
  if [ "$dry" = 1 ]; then
    builddir=${TMPDIR:-/tmp}/tmp.XXXXXXXXXX # what mktemp -d will make of it
  else
    builddir=$(mktemp -d)
    trap 'rm -rf "$builddir"' EXIT
  fi
  binary=$builddir/duetd
  run go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$binary" ./cmd/duetd
fi

docdir=$destdir/usr/local/share/doc/duetd
run install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/systemd/system" \
  "$destdir/etc/sysusers.d" "$destdir/etc/duetd" "$docdir"
run install -m 0755 "$binary" "$destdir/usr/local/bin/duetd"
run install -m 0644 scripts/duetd.service "$destdir/etc/systemd/system/duetd.service"
run install -m 0644 scripts/duetd.sysusers "$destdir/etc/sysusers.d/duetd.conf"
# Every guide, not OPERATIONS.md alone: duetd help and the unit point
# there, and it links to the others (PROTOCOL.md, LIMITS.md, ...).
run install -m 0644 docs/*.md "$docdir/"
# The guides also link to files of the clone outside docs/, as
# ../scripts/duetd.yaml: each is installed beside the guides under the
# same path (scripts/duetd.yaml), and the installed guides' links lose
# their ../, so that every link in an installed guide resolves. The
# lists come from the guides in the clone, so a dry run prints the same
# commands as a real one.
for target in $(grep -oh '](\.\./[^)#]*' docs/*.md | sed 's#^](\.\./##' | sort -u); do
  run install -D -m 0644 "$target" "$docdir/$target"
done
for guide in $(grep -l '](\.\./' docs/*.md); do
  run sed -i 's#](\.\./#](#g' "$docdir/${guide#docs/}"
done

# The unit runs duetd as the duetd user, and the configuration is only
# readable by its group. A staging root gets no user: whoever installs the
# staged files runs systemd-sysusers on the target.
group=()
if [ -z "$destdir" ]; then
  if command -v systemd-sysusers >/dev/null; then
    run systemd-sysusers /etc/sysusers.d/duetd.conf
  elif ! getent passwd duetd >/dev/null; then
    run useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin duetd
  fi
  group=(-o root -g duetd)
else
  echo "not creating the duetd user (DESTDIR set): run systemd-sysusers on the target, then chgrp duetd /etc/duetd/duetd.yaml"
fi

# The state directory the unit's StateDirectory= makes at the first
# start, made now, so that duetd check-config on the installed
# configuration, whose resume.state_file lies in it, passes before the
# service has ever run. Owned by duetd, as systemd would make it.
owner=()
if [ -z "$destdir" ]; then
  owner=(-o duetd -g duetd)
fi
run install -d -m 0700 "${owner[@]}" "$destdir/var/lib/duetd"

# The configuration may hold the Redis password: root writes it, the
# service reads it, nobody else does.
config=$destdir/etc/duetd/duetd.yaml
if [ -e "$config" ]; then
  echo "keeping the existing $config"
  if [ -n "$(find "$config" -perm -o=r)" ]; then
    echo "warning: $config is readable by every user, and may hold the Redis password; chgrp duetd $config && chmod 0640 $config" >&2
  fi
  # The unit once set resume.state_file in its environment; the
  # configuration sets it now, so an older one left in place would have
  # restarts end every conversation.
  if ! grep -Eq '^[[:space:]]+state_file:[[:space:]]*[^[:space:]"#]' "$config"; then
    echo "note: $config sets no resume.state_file, so a restart ends every conversation; on a single node, set it under resume: state_file: /var/lib/duetd/sessions (docs/RESUME.md)"
  fi
else
  run install -m 0640 "${group[@]}" scripts/duetd.yaml "$config"
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
if [ "$dry" = 1 ]; then
  echo "dry run: nothing was changed"
else
  echo "duetd installed${destdir:+ under $destdir}"
fi
