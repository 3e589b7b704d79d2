#!/usr/bin/env bash
# Installs the three npm JavaScript OpenCode plugins for Qwen OAuth that the adapters in this folder load, at the
# exact versions the adapters were written against, into target/js-plugins (git-ignored; not in package.json).
# Run from the repo root: bash bench/plugins/install.sh. Idempotent: does nothing when those versions are there.
# Then e.g.: node bench/run.mjs --fetch-module bench/plugins/opencode-qwen-oauth.mjs --only seq,sse
set -euo pipefail

cd "$(dirname "$0")/../.."
DIR=target/js-plugins
PKGS=(opencode-qwen-oauth@2.4.1 opencode-qwen-auth@0.3.4 opencode-qwencode-auth@1.3.0)

installed() {
  local name=${1%@*} version=${1##*@}
  [ -f "$DIR/node_modules/$name/package.json" ] &&
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
      "$PWD/$DIR/node_modules/$name/package.json" "$version"
}

missing=0
for p in "${PKGS[@]}"; do installed "$p" || missing=1; done
if [ "$missing" = 0 ]; then
  echo "js plugins already installed in $DIR"
  exit 0
fi

mkdir -p "$DIR"
# Its own package.json, so that this folder is a project of its own: npm never walks up to the repo's, and a
# later install cannot prune one plugin as extraneous.
cat >"$DIR/package.json" <<'EOF'
{
  "name": "js-plugins-under-bench",
  "private": true,
  "description": "Written by bench/plugins/install.sh",
  "dependencies": {
    "opencode-qwen-oauth": "2.4.1",
    "opencode-qwen-auth": "0.3.4",
    "opencode-qwencode-auth": "1.3.0"
  }
}
EOF
# --legacy-peer-deps: no auto-installed peers (opencode-qwen-auth's peers are typescript and the plugin types,
# neither used at run time). --ignore-scripts: nothing of theirs runs at install.
npm install --prefix "$DIR" --no-audit --no-fund --legacy-peer-deps --ignore-scripts

for p in "${PKGS[@]}"; do
  installed "$p" || { echo "install.sh: $p did not install" >&2; exit 1; }
done
echo "js plugins installed in $DIR"
