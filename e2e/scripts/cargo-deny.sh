#!/usr/bin/env bash
# `make deny`: cargo-deny over Cargo.lock with deny.toml: licenses, bans and sources. Installs the
# pinned cargo-deny from crates.io into the cache (outside the repository) when missing.
# Advisories need the RustSec database, a git repository on GitHub that this machine cannot reach;
# `cargo-deny.sh advisories` runs that check where it can.
source "$(dirname "$0")/lib.sh"
CARGO_DENY_VERSION=0.20.2
ROOT=$E2E_CACHE/cargo-deny-$CARGO_DENY_VERSION
if [ ! -x "$ROOT/bin/cargo-deny" ]; then
  log "installing cargo-deny $CARGO_DENY_VERSION into $ROOT"
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION" --root "$ROOT.tmp"
  rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
fi
if [ $# -eq 0 ]; then set -- licenses bans sources; fi
cd "$REPO_ROOT" && "$ROOT/bin/cargo-deny" --log-level warn check "$@"
