#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make run`: starts lychee-server on the embedded default model (configs/default.yaml), sends
# one example request with lychee-client, and keeps serving in the foreground (Ctrl-C drains and
# stops it). DEMO_ONCE=1 stops the server after the example instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin
prompt=${PROMPT:-Once upon a time}
max_tokens=${MAX_TOKENS:-120}
grpc_port=${GRPC_PORT:-50051}
http_port=${HTTP_PORT:-8000}

log=$(mktemp -t lychee-server.XXXXXX.log)
"$bin/lychee-server" --config configs/default.yaml --host 127.0.0.1 \
  --grpc-port "$grpc_port" --http-port "$http_port" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT

# Wait (at most 60 s) for the server to report its ports.
address=""
for _ in $(seq 600); do
  address=$(sed -n 's/.*grpc listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$address" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; echo "lychee-server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { cat "$log"; echo "lychee-server did not start" >&2; exit 1; }
cat "$log"

echo
echo "\$ lychee-client --address $address generate --prompt \"$prompt\" --max-tokens $max_tokens --temperature 0"
"$bin/lychee-client" --address "$address" generate --prompt "$prompt" --max-tokens "$max_tokens" \
  --temperature 0
echo
echo
echo "\$ curl -s http://127.0.0.1:$http_port/metrics | grep lychee_generation_tokens_total"
curl -s "http://127.0.0.1:$http_port/metrics" | grep '^lychee_generation_tokens_total' || true

if [ "${DEMO_ONCE:-0}" = 1 ]; then exit 0; fi
echo
echo "lychee-server is serving gRPC on $address and HTTP on 127.0.0.1:$http_port; Ctrl-C stops it."
trap - EXIT
tail -n 0 -f "$log" &
tailer=$!
trap 'kill -TERM $server 2>/dev/null; wait $server; kill $tailer 2>/dev/null; rm -f "$log"' INT TERM
wait $server
