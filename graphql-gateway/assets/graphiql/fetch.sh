#!/usr/bin/env bash
# Refreshes the GraphiQL files the gateway embeds, from the npm registry at pinned versions.
#
#   graphql-gateway/assets/graphiql/fetch.sh           download, verify against SHA256SUMS, copy
#   graphql-gateway/assets/graphiql/fetch.sh --check   verify the committed files only (offline)
#   graphql-gateway/assets/graphiql/fetch.sh --record  download and record new sums (after a
#                                                      version change below; review the diff)
#
# Every tarball and every file taken from it is checked against SHA256SUMS, so a registry that
# served other bytes for the same version fails here. Needs npm (for `npm pack`), tar, sha256sum.
set -euo pipefail

cd "$(dirname "$0")"

# package  version  file in the tarball              committed as
FILES=(
  "graphiql  4.1.2   package/graphiql.min.js                  graphiql-4.1.2.min.js"
  "graphiql  4.1.2   package/graphiql.min.css                 graphiql-4.1.2.min.css"
  "graphiql  4.1.2   package/LICENSE                          LICENSE.graphiql"
  "react     18.3.1  package/umd/react.production.min.js      react-18.3.1.production.min.js"
  "react     18.3.1  package/LICENSE                          LICENSE.react"
  "react-dom 18.3.1  package/umd/react-dom.production.min.js  react-dom-18.3.1.production.min.js"
  "react-dom 18.3.1  package/LICENSE                          LICENSE.react-dom"
)

mode="${1:-fetch}"
case "$mode" in
  fetch | --record | --check) ;;
  *) echo "usage: $0 [--check | --record]" >&2; exit 2 ;;
esac

committed() { for line in "${FILES[@]}"; do read -r _ _ _ name <<<"$line"; echo "$name"; done; }

if [[ "$mode" == "--check" ]]; then
  # Only the committed files' lines: the tarballs are not kept.
  mapfile -t names < <(committed)
  grep -F -f <(printf '  %s\n' "${names[@]}") SHA256SUMS | sha256sum --check --strict --quiet
  echo "the committed GraphiQL files match SHA256SUMS"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

declare -A packed=()
for line in "${FILES[@]}"; do
  read -r package version _ _ <<<"$line"
  tarball="$package-$version.tgz"
  [[ -n "${packed[$tarball]:-}" ]] && continue
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  mkdir -p "$work/$package"
  tar -xzf "$work/$tarball" -C "$work/$package"
  packed[$tarball]=1
done

for line in "${FILES[@]}"; do
  read -r package _ inside name <<<"$line"
  cp "$work/$package/$inside" "$work/$name"
done

mapfile -t names < <(committed)
if [[ "$mode" == "--record" ]]; then
  (cd "$work" && sha256sum "${!packed[@]}" "${names[@]}" | sort -k2) >SHA256SUMS
  echo "recorded new sums in SHA256SUMS: review the diff"
else
  (cd "$work" && sha256sum --check --strict --quiet <"$OLDPWD/SHA256SUMS") || {
    echo "a downloaded file does not match SHA256SUMS: not copied" >&2
    exit 1
  }
fi
for name in "${names[@]}"; do cp "$work/$name" "$name"; done
echo "copied: ${names[*]}"
