#!/usr/bin/env bash
# Activation codes through the API: a cloud server (SQLite, or PostgreSQL with DATABASE_URL), a
# provider batch of COUNT one-seat codes, and one tenant admin's CSV import of all of them; prints
# the import's wall time and checks that every code became a seat. Loopback only; stops what it
# started.
#
#   bench/activation-import.sh                          # 1,000 codes on SQLite
#   COUNT=1000 DATABASE_URL=postgres://postgres@127.0.0.1:5432/fresh bench/activation-import.sh
#
# Needs a release build (cargo build --release), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/floatilla}
COUNT=${COUNT:-1000}
work=$(mktemp -d)
storage=(--data-dir "$work/data")
if [[ -n "${DATABASE_URL:-}" ]]; then storage=(--database-url "$DATABASE_URL"); fi

"$BIN" serve --mode cloud "${storage[@]}" --listen 127.0.0.1:0 > "$work/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'https://[0-9.:]*' "$work/serve.log" | head -1)
"$BIN" admin "${storage[@]}" ca-certificate > "$work/ca.pem"
provider=$("$BIN" admin "${storage[@]}" create-token --role provider)
api() { curl -sf --cacert "$work/ca.pem" -H "Authorization: Bearer $1" "${@:2}"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

tenant=$(api "$provider" -H 'Content-Type: application/json' -d '{"name":"bench"}' \
  "$url/api/v1/provider/tenants" | field '["id"]')
admin=$("$BIN" admin "${storage[@]}" create-token --role admin --tenant "$tenant")
before=$(api "$admin" "$url/api/v1/license-pool" | field '["capacity"]')
api "$provider" -H 'Content-Type: application/json' \
  -d "{\"count\":$COUNT,\"seats\":1,\"term_months\":12}" \
  "$url/api/v1/provider/activation-codes" > "$work/codes.csv"
api "$admin" -H 'Content-Type: text/csv' --data-binary @"$work/codes.csv" -o "$work/report.json" \
  -w "import of $COUNT codes: %{time_total} s\n" "$url/api/v1/activation-codes/import"
redeemed=$(field '["redeemed"]' < "$work/report.json")
after=$(api "$admin" "$url/api/v1/license-pool" | field '["capacity"]')
echo "redeemed $redeemed; capacity $before -> $after"
[[ "$redeemed" == "$COUNT" && $((after - before)) == "$COUNT" ]]
