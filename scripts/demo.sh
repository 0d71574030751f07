#!/usr/bin/env bash
# demo.sh - the README's first command: build hotserve, make a small demo repository, serve it on
# :8000 and show a hot reload (version 2 is published while a loop of curl requests keeps running,
# and no request fails). Then it keeps serving until Ctrl-C.  PORT=8080 bash scripts/demo.sh to move it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8000}
PY=/usr/bin/python3

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
HS=$PWD/build/src/hotserve

DEMO=$(mktemp -d /tmp/hotserve-demo.XXXXXX)
SERVER=""
LOOP=""
cleanup() {
  [ -n "$LOOP" ] && kill "$LOOP" 2>/dev/null || true
  if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DEMO"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== making the demo repository in $DEMO/repo (model 'demo': y = x + version)"
mkdir -p "$DEMO/v1" "$DEMO/v2" "$DEMO/repo/demo"
$PY tools/testmodels/make_test_model.py "$DEMO/v1/model.onnx" --add 1 --shape 1,4
$PY tools/testmodels/make_test_model.py "$DEMO/v2/model.onnx" --add 2 --shape 1,4
"$HS" publish "$DEMO/v1" "$DEMO/repo/demo" --version 1

echo "== hotserve serve --model-repository $DEMO/repo --http-port $PORT"
"$HS" serve --model-repository "$DEMO/repo" --http-port "$PORT" --poll-interval 0.5 &
SERVER=$!
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 200); do
  curl -sf "$URL/v2/models/demo/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "hotserve exited" >&2; exit 1; }
  sleep 0.1
done

BODY='{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'
echo "== a curl loop asks for y = x + K every 0.1 s; version 2 is published in the middle"
(
  ok=0; bad=0
  for i in $(seq 1 60); do
    if out=$(curl -sf -X POST -H 'Content-Type: application/json' -d "$BODY" "$URL/v2/models/demo/infer"); then
      ok=$((ok + 1))
      echo "  request $i: $(echo "$out" | $PY -c 'import json,sys; d=json.load(sys.stdin); print("version", d["model_version"], "y =", d["outputs"][0]["data"])')"
    else
      bad=$((bad + 1)); echo "  request $i: FAILED"
    fi
    sleep 0.1
  done
  echo "== $ok requests answered, $bad failed"
) &
LOOP=$!
sleep 2
echo "== hotserve publish v2 -> $DEMO/repo/demo (version 2)"
"$HS" publish "$DEMO/v2" "$DEMO/repo/demo" --version 2
wait "$LOOP" || true
LOOP=""

echo "== status document: curl $URL/v2/models/demo/status"
curl -s "$URL/v2/models/demo/status" | $PY -m json.tool
echo "== a few metrics: curl $URL/metrics"
curl -s "$URL/metrics" | grep -E '^hotserve_(requests_total|model_serving_version|model_loads_total|model_versions_live)' || true
echo
echo "hotserve keeps serving $DEMO/repo on $URL (try: curl $URL/v2/models/demo). Ctrl-C stops it."
wait "$SERVER"
