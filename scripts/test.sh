#!/usr/bin/env bash
# Runs every duet test: formatting, vet, the whole suite under the race
# detector (fuzz seed corpora included), then each fuzz target for a
# bounded time. On a fresh Debian machine as root it first installs the
# programs the tests use (scripts/deps.sh).
#
#   scripts/test.sh                 everything
#   FUZZTIME=0 scripts/test.sh      skip the timed fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 25m ./...

fuzztime=${FUZZTIME:-15s}
if [ "$fuzztime" != "0" ]; then
  echo "== fuzzing, $fuzztime per target"
  # Every Fuzz* function in the module, run one at a time.
  grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
    pkg=./$(dirname "${file#./}")
    for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
      echo "-- $pkg $target"
      go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
    done
  done
fi
echo "== all tests passed"
