#!/usr/bin/env bash
# Fuzzes every loader (fuzz/: checkpoint, image, llava, questions) and the tokenizer
# (crates/tokenizer/fuzz: encode_decode) for SECONDS each (default 600), one after another, with
# corpora seeded from tests/fixtures. A crash, a panic, a failed heap bound (fuzz/src/lib.rs) or
# an RSS above 2 GiB stops the run; libFuzzer leaves the input in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (installed from crates.io when missing) and runs on the stable toolchain
# through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly flags). Builds go to
# $FUZZ_TARGET_DIR (default ~/.cache/visualrwkv-fuzz-target). A summary line per target goes to
# fuzz/results.txt (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint image llava questions encode_decode)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/visualrwkv-fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The workspace's versions of every shared dependency.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
[ -f crates/tokenizer/fuzz/Cargo.lock ] || cp Cargo.lock crates/tokenizer/fuzz/Cargo.lock

seed() { # seed TARGET FILE...
  local dir=fuzz/corpus/$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do cp -n "$f" "$dir/" 2>/dev/null || true; done
}
fx=tests/fixtures
seed checkpoint $fx/rwkv6_tiny_a_weights.safetensors $fx/rwkv6_tiny_a_weights_bf16.pth \
  $fx/clip_tiny_weights.safetensors $fx/siglip_tiny_weights.safetensors
seed image $fx/jpeg/*.jpg $fx/preprocess/*.png
seed llava $fx/llava/llava_dev.json
seed questions $fx/eval/pope/questions.jsonl $fx/eval/items/*.jsonl $fx/eval/gqa/testdev_balanced_questions.json \
  $fx/eval/pope/answers.jsonl
mkdir -p crates/tokenizer/fuzz/corpus/encode_decode
cp -n $fx/tokenizer_cases.jsonl crates/tokenizer/fuzz/corpus/encode_decode/ 2>/dev/null || true

for t in "${targets[@]}"; do
  if [ "$t" = encode_decode ]; then dir=crates/tokenizer/fuzz; root=crates/tokenizer; else dir=fuzz; root=.; fi
  log=$(mktemp)
  echo "== $t: ${seconds} s"
  start=$(date +%s)
  status=0
  (cd "$root" && cargo fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    -print_final_stats=1) 2>&1 | tee "$log" | grep -E "^#[0-9]+ *(DONE|pulse)|ERROR|panicked|SUMMARY" || status=$?
  runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo 0)
  if grep -qE "ERROR: libFuzzer|panicked|==ERROR" "$log"; then verdict=FINDING; else verdict="no finding"; fi
  echo "$(date -u +%F) $t: $((`date +%s` - start)) s, $runs executions, $verdict" | tee -a fuzz/results.txt
  rm -f "$log"
done
