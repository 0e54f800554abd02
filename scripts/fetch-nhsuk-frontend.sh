#!/usr/bin/env bash
# Fetches the NHS design system's built front end (nhsuk-frontend, pinned
# below) from the npm registry with `npm pack` and copies its compiled CSS,
# JavaScript and images into coordinator/portal/static/nhsuk/, which the
# portal embeds. The copied files are committed: a build needs neither npm
# nor the network. Rerun after changing VERSION, and commit the result.
#
# Two edits are made to the stylesheet, both so that the portal's strict
# Content-Security-Policy (nothing loaded from elsewhere) holds:
#   * its images are referenced at /assets/...; they are served under
#     /static/nhsuk/assets/..., so the paths are rewritten;
#   * its @font-face rules load the Frutiger web font from assets.nhs.uk.
#     Frutiger is licensed to NHS services and is not in the package, so the
#     rules are removed and text falls back to Arial, as the design system's
#     own font stack does when Frutiger is unavailable.
set -euo pipefail

VERSION=10.6.1
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/coordinator/portal/static/nhsuk"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "nhsuk-frontend@$VERSION" >/dev/null)
tar -xzf "$work/nhsuk-frontend-$VERSION.tgz" -C "$work"
pkg="$work/package"
dist="$pkg/dist/nhsuk"

rm -rf "$dest"
mkdir -p "$dest/assets/images"
# Strip the @font-face blocks and point image URLs at the embedded copies.
sed -e 's#@font-face{[^}]*assets\.nhs\.uk[^}]*}##g' \
    -e 's#url(/assets/#url(/static/nhsuk/assets/#g' \
    "$dist/nhsuk-frontend-$VERSION.min.css" > "$dest/nhsuk-frontend.min.css"
if grep -q 'assets\.nhs\.uk' "$dest/nhsuk-frontend.min.css"; then
  echo "fetch-nhsuk-frontend: the stylesheet still loads from assets.nhs.uk; update the sed above" >&2
  exit 1
fi
# The source map comment would send browsers looking for a file not copied.
sed -e '/sourceMappingURL/d' "$dist/nhsuk-frontend-$VERSION.min.js" > "$dest/nhsuk-frontend.min.js"
cp "$dist"/assets/images/*.svg "$dist"/assets/images/favicon.ico "$dest/assets/images/"

# The package ships no LICENSE file; its package.json says MIT and its
# README's "Licence" section says what the licence covers.
{
  echo "nhsuk-frontend $VERSION, from the npm registry (npm pack nhsuk-frontend@$VERSION)"
  echo "https://github.com/nhsuk/nhsuk-frontend"
  echo
  echo "package.json: \"license\": \"$(node -p "require('$pkg/package.json').license")\""
  echo
  awk '/^## Licence/ {on = 1; print; next} /^## / {on = 0} on' "$pkg/README.md"
  echo
  cat <<'MIT'
The MIT License

Copyright (c) NHS England and the nhsuk-frontend contributors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE.
MIT
} > "$dest/LICENSE"
echo "$VERSION" > "$dest/VERSION"
echo "nhsuk-frontend $VERSION copied to ${dest#"$root"/}"
