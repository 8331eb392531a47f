#!/usr/bin/env bash
# Pristine vs patched SGLang on a GPU with DeepSeek-V2-Lite (not run in CI: needs a Hopper GPU,
# internet access for the model and the wheels' dependencies). Usage:
#   bash bench/gpu/run_gpu_bench.sh [--help]
# Environment (defaults): MODEL=deepseek-ai/DeepSeek-V2-Lite  WHEEL=dist/sglang-*+mla.*.whl
#   VENV=build/gpu-venv  OUT=bench/out/gpu  PORT=30000  POOL_TOKENS=150000 (--max-total-tokens:
#   keep the KV pool under pressure as in the CPU benchmark; 0 = SGLang's own sizing)
#   MAX_RUNNING=128  EXTRA_SERVER_ARGS=""  VARIANTS="pristine patched"
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,8p' "$0"; exit 0; fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=${MODEL:-deepseek-ai/DeepSeek-V2-Lite}
WHEEL=${WHEEL:-$(ls "$ROOT"/dist/sglang-*+mla.*.whl 2>/dev/null | head -1)}
VENV=${VENV:-$ROOT/build/gpu-venv}
OUT=${OUT:-$ROOT/bench/out/gpu}
PORT=${PORT:-30000}
POOL_TOKENS=${POOL_TOKENS:-150000}
MAX_RUNNING=${MAX_RUNNING:-128}
VARIANTS=${VARIANTS:-pristine patched}
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] || { echo "error: no patched wheel (run make wheel, or set WHEEL=)" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "error: no nvidia-smi: this script needs a GPU" >&2; exit 1; }
mkdir -p "$OUT"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY=$VENV/bin/python

install() { # pristine: upstream's release from PyPI with its dependencies; patched: our wheel on top
  case $1 in
    pristine) "$PY" -m pip install -q "sglang==0.5.10.post1" ;;
    patched) "$PY" -m pip install -q "sglang==0.5.10.post1" && "$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL" ;;
  esac
  "$PY" -c "import sglang; print('sglang', sglang.__version__)"
}

server_pid=
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=; }
trap stop_server EXIT

start_server() { # $1 variant
  local pool=()
  [ "$POOL_TOKENS" != 0 ] && pool=(--max-total-tokens "$POOL_TOKENS")
  "$PY" -m sglang.launch_server --model-path "$MODEL" --trust-remote-code \
    --page-size 64 --attention-backend flashmla --port "$PORT" \
    --max-running-requests "$MAX_RUNNING" "${pool[@]}" ${EXTRA_SERVER_ARGS:-} \
    > "$OUT/server-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || { tail -50 "$OUT/server-$1.log" >&2; exit 1; }
    sleep 2
  done
  echo "error: server did not come up in 20 minutes" >&2; exit 1
}

for v in $VARIANTS; do
  install "$v"
  start_server "$v"
  # 1. Shared system prompts at bench_serving's generated-shared-prefix defaults.
  "$PY" -m sglang.bench_serving --backend sglang --host 127.0.0.1 --port "$PORT" \
    --dataset-name generated-shared-prefix --gsp-num-groups 64 --gsp-prompts-per-group 16 \
    --gsp-system-prompt-len 2048 --gsp-question-len 128 --gsp-output-len 256 \
    --seed 1 --flush-cache --output-file "$OUT/results.jsonl" --tag "$v gsp"
  # 2. Multi-turn (bench_multiturn's shape: 256 conversations, 128 at a time, 5 rounds of 512
  #    new tokens and 64 output tokens; each round resends the history with the answers).
  "$PY" -m sglang.bench_serving --backend sglang-oai-chat --host 127.0.0.1 --port "$PORT" \
    --dataset-name generated-shared-prefix --gsp-num-groups 256 --gsp-prompts-per-group 1 \
    --gsp-system-prompt-len 512 --gsp-question-len 512 --gsp-output-len 64 --gsp-num-turns 5 \
    --max-concurrency 128 --seed 1 --flush-cache --output-file "$OUT/results.jsonl" --tag "$v multiturn"
  stop_server
done
"$PY" "$ROOT/bench/gpu/compare.py" "$OUT/results.jsonl"
