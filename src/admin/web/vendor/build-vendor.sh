#!/bin/sh
# Remakes every file in this folder from pinned npm packages. Run by hand when
# a version changes, never by the build: the results are committed, and the
# binary embeds them as they are.
#   Preact, its hooks and htm: their own ES module builds, copied.
#   uPlot: its ES module build minified by esbuild (not bundled), and its stylesheet.
#   CodeMirror 6: one ES module bundled from entry-codemirror.js by esbuild.
# Usage: src/admin/web/vendor/build-vendor.sh   (needs node and npm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
cat > package.json <<'JSON'
{
  "private": true,
  "dependencies": {
    "preact": "11.2.0",
    "htm": "3.1.1",
    "uplot": "1.6.32",
    "@codemirror/autocomplete": "6.20.4",
    "@codemirror/commands": "6.11.1",
    "@codemirror/language": "6.13.1",
    "@codemirror/legacy-modes": "6.5.5",
    "@codemirror/lint": "6.9.8",
    "@codemirror/search": "6.7.2",
    "@codemirror/state": "6.7.6",
    "@codemirror/view": "6.43.15",
    "@lezer/highlight": "1.2.5",
    "esbuild": "0.28.2"
  }
}
JSON
npm install --no-audit --no-fund --ignore-scripts=false --loglevel=error

cp node_modules/preact/dist/preact.mjs "$here/preact.mjs"
# hooks import "preact": the page's import map resolves it to preact.mjs.
cp node_modules/preact/hooks/dist/hooks.mjs "$here/preact-hooks.mjs"
cp node_modules/htm/dist/htm.module.js "$here/htm.mjs"
cp node_modules/uplot/dist/uPlot.min.css "$here/uplot.css"
# Source maps are not shipped: drop the comments that point at them.
for f in preact.mjs preact-hooks.mjs htm.mjs; do
  sed -i '/^\/\/# sourceMappingURL=/d' "$here/$f"
done

# uPlot ships its ES module unminified: minified here, not bundled.
node_modules/.bin/esbuild node_modules/uplot/dist/uPlot.esm.js --minify --format=esm \
  --target=es2020 --legal-comments=none --outfile="$here/uplot.mjs"
# Bundled from the temporary folder, where its imports resolve.
cp "$here/entry-codemirror.js" .
node_modules/.bin/esbuild entry-codemirror.js --bundle --format=esm --minify \
  --target=es2020 --legal-comments=none --outfile="$here/codemirror.mjs"

# Licences of everything shipped, one file.
{
  for pkg in preact htm uplot @codemirror/autocomplete @codemirror/commands @codemirror/language \
             @codemirror/legacy-modes @codemirror/lint @codemirror/search @codemirror/state \
             @codemirror/view @lezer/common @lezer/highlight @lezer/lr style-mod w3c-keyname crelt \
             @marijn/find-cluster-break; do
    dir=node_modules/$pkg
    [ -d "$dir" ] || continue
    version=$(node -p "require('./$dir/package.json').version")
    licence=$(ls "$dir" | grep -i -m1 -E '^licen[cs]e')
    printf '==== %s %s ====\n\n' "$pkg" "$version"
    cat "$dir/$licence"
    printf '\n'
  done
} > "$here/LICENSES.txt"
echo "vendor files written to $here"
