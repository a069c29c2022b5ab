#!/usr/bin/env bash
# The floating license pool's reference scenario, against a real server in real time (about two
# minutes): a license of 10 seats that ends after 60 seconds and a permanent one of 5; 20 simulated
# routers connect in order; the first 15 are licensed, the last 5 excess; when the 60 seconds are
# up, the 10 last in line of the licensed become excess; a new license of 10 seats restores them,
# oldest first.
#
# Needs curl and jq. Run from the repository root:   bash docs/license-pool-scenario.sh
# (FLOATILLA=path/to/floatilla uses an existing binary instead of building one.)
set -euo pipefail

if [[ -z "${FLOATILLA:-}" ]]; then
    cargo build --release --quiet
    FLOATILLA=target/release/floatilla
fi
WORK=$(mktemp -d)
SERVER_PID=""
SIM_PID=""
cleanup() {
    [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null || true
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$FLOATILLA" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 --allow-unsigned-licenses \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    URL=$(sed -n 's/^listening on //p' "$WORK/serve.out")
    [[ -n "$URL" ]] && break
    sleep 0.1
done
[[ -n "$URL" ]] || { echo "the server did not start:"; cat "$WORK/serve.log"; exit 1; }
TOKEN=$("$FLOATILLA" admin --data-dir "$WORK/data" create-token --role admin)
"$FLOATILLA" admin --data-dir "$WORK/data" ca-certificate >"$WORK/ca.pem"

api() {
    local method=$1 path=$2
    shift 2
    curl -sS --fail-with-body --cacert "$WORK/ca.pem" -X "$method" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@" "$URL$path"
}

pool() {
    api GET /api/v1/license-pool |
        jq -r '"capacity \(.capacity): \(.in_use) licensed, \(.excess) excess. Next: \(.next_change.description // "no change scheduled")"'
}

routers() {
    api GET '/api/v1/devices?limit=100' |
        jq -r '.items[] | "  \(.serial)  \(.license_state)\t\(.license_reason // "")"'
}

echo "== Server at $URL"
ENDS=$(date -u -d '+60 seconds' +%Y-%m-%dT%H:%M:%SZ)
api POST /api/v1/licenses -d "{\"name\": \"ten for a minute\", \"seats\": 10, \"not_after\": \"$ENDS\"}" >/dev/null
api POST /api/v1/licenses -d '{"name": "five forever", "seats": 5}' >/dev/null
echo "== Licenses: 10 seats until $ENDS, 5 permanent"
ENROLL=$(api POST /api/v1/enrollment-tokens -d '{"name": "scenario"}' | jq -r .token)

echo "== 20 routers connect, two a second, in serial order"
"$FLOATILLA" simulate --server "$URL" --enroll-token "$ENROLL" --devices 20 --rate 2 \
    --serial-prefix LP- >"$WORK/simulate.log" 2>&1 &
SIM_PID=$!
until [[ $(api GET '/api/v1/devices?connection_state=online' | jq .total) == 20 ]]; do sleep 1; done
pool
routers

echo "== Waiting for the 10-seat license to end at $ENDS"
until [[ $(api GET /api/v1/license-pool | jq .capacity) == 5 ]]; do sleep 1; done
pool
routers

echo "== A new license of 10 seats"
api POST /api/v1/licenses -d '{"name": "ten more", "seats": 10}' >/dev/null
pool
routers
echo "== The license_restored events, oldest first:"
api GET '/api/v1/devices?limit=100' >"$WORK/devices.json"
api GET '/api/v1/events?kind=license_restored' |
    jq -r --slurpfile devices "$WORK/devices.json" '
        ($devices[0].items | map({(.id): .serial}) | add) as $serials
        | .items | reverse | .[] | "  \(.at)  \($serials[.device_id])  \(.message)"'
