#!/bin/sh
# tests/systemd/test_unit.sh BUILD_DIR FLAMED: `cmake --install` puts every file in its place;
# the installed example config loads back (`flamed --test-config`, given the one setting
# an operator must write: the brokers) and names every setting
# of `flamed --dump-config`; `systemd-analyze verify` finds nothing wrong with the unit (when
# systemd-analyze is installed; it is checked with ExecStart pointing at the built binary,
# since verify wants the binary to exist); docs/SETTINGS.md is what scripts/settings-doc.py
# makes of the daemon's --dump-config.
set -eu
build=$1
flamed=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cmake --install "$build" --prefix "$tmp/usr" > "$tmp/install.log" || fail "cmake --install: $(cat "$tmp/install.log")"
for f in bin/flamed bin/flame lib/systemd/system/flamed.service lib/sysusers.d/flamed.conf \
  lib/tmpfiles.d/flamed.conf etc/flamed/flamed.ini; do
  [ -s "$tmp/usr/$f" ] || fail "not installed: $f"
done
ini="$tmp/usr/etc/flamed/flamed.ini"
"$flamed" --config "$ini" --kafka.bootstrap.servers=127.0.0.1:9092 --test-config 2> "$tmp/test-config.log" || fail "the example config does not load: $(cat "$tmp/test-config.log")"
n_ini=$(grep -cE '^[a-z0-9_.]+ = ' "$ini")
n_dump=$("$flamed" --dump-config | grep -cE '^[a-z0-9_.]+ = ')
[ "$n_ini" -eq "$n_dump" ] && [ "$n_ini" -gt 50 ] || fail "the example config has $n_ini settings, the daemon $n_dump"
grep -q '^# ' "$ini" || fail "the example config has no help text"
# the settings reference in docs/ is the daemon's own dump, rendered
here=$(cd "$(dirname "$0")/../.." && pwd)
"$flamed" --dump-config | python3 "$here/scripts/settings-doc.py" > "$tmp/SETTINGS.md"
diff -u "$here/docs/SETTINGS.md" "$tmp/SETTINGS.md" > "$tmp/settings.diff" ||
  fail "docs/SETTINGS.md is stale: build/flamed --dump-config | scripts/settings-doc.py > docs/SETTINGS.md
$(head -n 40 "$tmp/settings.diff")"
unit="$tmp/usr/lib/systemd/system/flamed.service"
grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
if command -v systemd-analyze > /dev/null; then
  mkdir -p "$tmp/verify"
  sed "s|^ExecStart=[^ ]*|ExecStart=$flamed|" "$unit" > "$tmp/verify/flamed.service"
  (cd "$tmp/verify" && systemd-analyze verify ./flamed.service) > "$tmp/verify.log" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$tmp/verify.log")"
  [ ! -s "$tmp/verify.log" ] || fail "systemd-analyze verify warns: $(cat "$tmp/verify.log")"
  echo "systemd-analyze verify: clean"
else
  echo "systemd-analyze not installed: unit not verified"
fi
echo "ok: install tree, example config ($n_ini settings), unit"
