#!/usr/bin/env bash
# The README's first command: build, then run a collector and an agent on this machine with
# everything in ./demo, and show this host's live status. Ctrl-C stops both.
# Extra arguments go to `aftercare-collector quickstart` (e.g. --duration 45s, --dir DIR).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
cargo build --release --locked -p aftercare-agent -p aftercare-collector
exec target/release/aftercare-collector quickstart --agent target/release/aftercare-agent "$@"
