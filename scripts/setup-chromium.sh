#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed, for the tests that drive web
# pages in a real browser (github.com/chromedp/chromedp). Installs the
# chromium package with apt-get when it is missing. Idempotent: a second run
# only checks.
set -euo pipefail

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

if command -v chromium >/dev/null; then
  echo "setup-chromium: $(command -v chromium) present"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-chromium: chromium not found and apt-get is unavailable; install Chromium by hand" >&2
  exit 1
fi
echo "setup-chromium: installing Chromium (Debian package chromium) with apt-get" >&2
if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v chromium >/dev/null; then
  echo "setup-chromium: installed chromium, but it is still not on PATH" >&2
  exit 1
fi
echo "setup-chromium: $(command -v chromium) present"
