#!/usr/bin/env bash
# Fetches axe-core (the accessibility engine, pinned below) from the npm
# registry with `npm pack` and copies its built axe.min.js and licence into
# internal/browsertest/axe/, which the browser tests embed and run in every
# page they check (Browser.CheckAccessibility). The copied files are
# committed: a test run needs neither npm nor the network. Rerun after
# changing VERSION, and commit the result.
set -euo pipefail

VERSION=4.14.1
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/internal/browsertest/axe"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "axe-core@$VERSION" >/dev/null)
tar -xzf "$work/axe-core-$VERSION.tgz" -C "$work"
rm -rf "$dest"
mkdir -p "$dest"
cp "$work/package/axe.min.js" "$dest/axe.min.js"
{
  echo "axe-core $VERSION, from the npm registry (npm pack axe-core@$VERSION)"
  echo "https://github.com/dequelabs/axe-core"
  echo
  cat "$work/package/LICENSE"
} > "$dest/LICENSE"
echo "axe-core $VERSION copied to ${dest#"$root"/}"
