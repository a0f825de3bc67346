#!/usr/bin/env bash
# bitnetctl's in-process commands end to end on a synthesized model, and their errors:
# every bad input must give a message naming the problem and a non-zero exit.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=build/test-tmp/cli
rm -rf "$T"; mkdir -p "$T"
# bench records every run in the benchmark history: here, not in the user's
export XDG_STATE_HOME=$PWD/$T/state
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_error DESCRIPTION PATTERN CMD...: CMD must exit non-zero with PATTERN on stderr
expect_error() {
    local what=$1 pat=$2; shift 2
    local err
    if err=$("$@" 2>&1 >/dev/null); then fail "$what: exited 0"; return; fi
    grep -qE -- "$pat" <<<"$err" || fail "$what: message '$err' lacks /$pat/"
}

M=$T/model.gguf
$CTL model synth --out $M --shape tiny --seed 7 2>$T/synth.err || fail "synth tiny"
grep -q "100%" $T/synth.err || fail "synth shows no progress"
[ -z "$(ls -A $T | grep -v '^model.gguf$\|^synth.err$')" ] || fail "synth left a temporary file: $(ls -A $T)"

# inspect, text and JSON
out=$($CTL model inspect $M) || fail "inspect"
grep -q "^layers: *4$" <<<"$out" || fail "inspect: layers"
grep -q "46 tensors" <<<"$out" || fail "inspect: tensor count"
grep -q "blk.3.ffn_down.weight *I2_S *\[512, 256\]" <<<"$out" || fail "inspect: ffn_down row"
json=$($CTL model inspect $M --json) || fail "inspect --json"
node -e 'const j=JSON.parse(require("fs").readFileSync(0));
  if (j.n_tensors!==46||j.hparams.n_layer!==4||j.hparams.n_head_kv!==1||j.tensors.length!==46||!j.tied_output) process.exit(1)' <<<"$json" \
  || fail "inspect --json content"

# the same seed writes the same bytes; another seed does not
$CTL model synth --out $T/again.gguf --shape tiny --seed 7 2>/dev/null
cmp -s $M $T/again.gguf || fail "synth is not deterministic for a seed"
# the directories above --out are made as needed; a file in the way is named
$CTL model synth --out $T/new/dirs/m.gguf --shape tiny --seed 7 2>/dev/null || fail "synth into new directories"
cmp -s $M $T/new/dirs/m.gguf || fail "synth into new directories wrote other bytes"
expect_error "synth under a file" "$T/again.gguf: not a directory" \
    $CTL model synth --out $T/again.gguf/m.gguf --shape tiny
$CTL model synth --out $T/other.gguf --shape tiny --seed 8 2>/dev/null
cmp -s $M $T/other.gguf && fail "synth ignores the seed"

# bench: the JSON keys other tools read, each a positive figure; with --depth, each deep
# decode step is paired with one at depth 0 (depth0_tps, depth_ratio)
json=$($CTL bench --model $M --threads 2 --repeat 1 --prompt-tokens 8 --gen-tokens 4 --depth 40 \
       --json 2>/dev/null) || fail "bench --json"
node -e 'const j=JSON.parse(require("fs").readFileSync(0));
  for (const k of ["prompt_tps","generated_tps","ttft_s","load_s","peak_rss_bytes","read_gbps",
                   "roofline_ratio","depth0_tps","depth_ratio"])
    if (!(j[k] > 0)) { console.error("bench key " + k + ": " + j[k]); process.exit(1); }
  if (j.threads !== 2 || j.depth !== 40 || typeof j.kernel !== "string" ||
      Math.abs(j.depth_ratio - j.generated_tps / j.depth0_tps) > 1e-9) process.exit(1);
  /* the same chunks with the KV cache'"'"'s bytes added: above the weights-only ratio, and
     by less than the cache of 40-52 positions can add next to the weights */
  if (!(j.memory_ratio > j.roofline_ratio && j.memory_ratio < 2 * j.roofline_ratio))
    process.exit(1)' <<<"$json" \
  || fail "bench --json content: $json"
# bench --breakdown: every part of decode timed (a part left untimed reads 0), the parts
# adding up to no more than the decode steps' whole time, and the weights' parts streaming
# at a positive rate
json=$($CTL bench --model $M --threads 2 --repeat 1 --prompt-tokens 8 --gen-tokens 6 --breakdown \
       --json 2>/dev/null) || fail "bench --breakdown --json"
node -e 'const j=JSON.parse(require("fs").readFileSync(0)), b=j.breakdown;
  const parts=["norms_ms","qkv_ms","attention_ms","o_ms","gate_up_ms","down_ms","head_ms"];
  let sum=0;
  for (const k of parts) { if (!(b[k] > 0)) { console.error("breakdown " + k + ": " + b[k]); process.exit(1); } sum += b[k]; }
  const step=1000 / j.generated_tps;
  if (b.tokens !== 6 || !(b.other_ms >= 0) || Math.abs(sum + b.other_ms - step) > 1e-6 * step + 1e-9)
    { console.error("breakdown sums " + sum + " + " + b.other_ms + " against " + step); process.exit(1); }' \
  <<<"$json" || fail "bench --breakdown content: $json"
text=$($CTL bench --model $M --threads 1 --repeat 1 --prompt-tokens 4 --gen-tokens 2 --breakdown 2>/dev/null)
grep -q "^  gate/up .* GB/s of" <<<"$text" || fail "bench --breakdown table: $text"
expect_error "bench without a model or a daemon" "no daemon at $T/none" $CTL bench --run-dir $T/none
expect_error "bench, stray argument" "usage" $CTL bench --model $M extra
expect_error "bench, negative depth" "depth" $CTL bench --model $M --depth -1

# tokenize / detokenize through the GGUF's own tokenizer
ids=$($CTL tokenize --model $M --text "Hello world") || fail "tokenize"
[ "$ids" = "9906 1917" ] || fail "tokenize 'Hello world' gave '$ids'"
ids=$($CTL tokenize --model $M --text "Hello world" --bos)
[ "$ids" = "128000 9906 1917" ] || fail "tokenize --bos gave '$ids'"
ids=$($CTL tokenize --model $M --text "a<|eot_id|>b")
[ "$ids" = "64 128009 65" ] || fail "special token in text gave '$ids'"
txt=$($CTL detokenize --model $M --ids "9906 1917 0")
[ "$txt" = "Hello world!" ] || fail "detokenize gave '$txt'"

# generation: greedy is deterministic, sampling follows the seed, --ids prints ids
g1=$($CTL generate --model $M --prompt "Once upon a time" -n 12 --temp 0 --ids 2>$T/gen.err) || fail "generate"
g2=$($CTL generate --model $M --prompt "Once upon a time" -n 12 --temp 0 --ids 2>/dev/null)
[ -n "$g1" ] && [ "$g1" = "$g2" ] || fail "greedy generation not repeatable ('$g1' vs '$g2')"
[ "$(wc -w <<<"$g1")" -eq 12 ] || fail "-n 12 gave $(wc -w <<<"$g1") tokens"
grep -q "generated: 12 tokens" $T/gen.err || fail "no stats line: $(cat $T/gen.err)"
s1=$($CTL generate --model $M --prompt "Once" -n 8 --temp 1 --seed 5 --ids 2>/dev/null)
s2=$($CTL generate --model $M --prompt "Once" -n 8 --temp 1 --seed 5 --ids 2>/dev/null)
s3=$($CTL generate --model $M --prompt "Once" -n 8 --temp 1 --seed 6 --ids 2>/dev/null)
[ "$s1" = "$s2" ] || fail "same seed, different samples"
[ "$s1" != "$s3" ] || fail "different seeds, same samples"
$CTL generate --model $M --chat "Hi" --system "Be brief" -n 4 --top-k 5 --top-p 0.9 --min-p 0.1 \
    --repeat-penalty 1.2 >/dev/null 2>&1 || fail "generate --chat with every sampler"
text=$($CTL generate --model $M --prompt "Once upon a time" -n 12 --temp 0 2>/dev/null)
[ -n "$text" ] || fail "generate printed no text"

# perplexity counts like llama-perplexity and prints PPL = X
for i in $(seq 1 40); do echo "The quick brown fox jumps over the lazy dog number $i."; done > $T/text.txt
ppl=$($CTL perplexity --model $M --text-file $T/text.txt --ctx 64 --chunks 2 2>/dev/null) || fail "perplexity"
grep -qE "^PPL = [0-9]+\.[0-9]+$" <<<"$ppl" || fail "perplexity output '$ppl'"
# ... and scores what eval's logits say: one chunk of 80, positions 40..78 (logits taken
# 32 rows at a time, so the groups end mid-chunk)
ppl=$($CTL perplexity --model $M --text-file $T/text.txt --ctx 80 --chunks 1 2>/dev/null) ||
    fail "perplexity --ctx 80"
ids=$($CTL tokenize --model $M --text "$(cat $T/text.txt)" --bos | tr ' ' '\n' | head -80 | paste -sd,)
$CTL eval --model $M --ids "$ids" --logits-out $T/ppl.f32 2>/dev/null || fail "eval of the chunk"
node -e '
  const fs = require("fs"), ids = process.argv[1].split(",").map(Number);
  const buf = fs.readFileSync(process.argv[2]), V = 128256;
  const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  let nll = 0, n = 0;
  for (let j = 40; j < 79; j++) {
    const row = f.subarray(j * V, (j + 1) * V);
    let max = -Infinity; for (const x of row) if (x > max) max = x;
    let sum = 0; for (const x of row) sum += Math.exp(x - max);
    nll += Math.log(sum) - (row[ids[j + 1]] - max); n++;
  }
  const want = Math.exp(nll / n), got = Number(process.argv[3].replace("PPL = ", ""));
  if (!(Math.abs(got - want) <= 1e-6 * want)) { console.error("ppl", got, "from eval", want); process.exit(1); }
' "$ids" $T/ppl.f32 "$ppl" || fail "perplexity does not match eval's logits"

# eval writes positions x vocab floats
$CTL eval --model $M --ids 128000,9906,1917 --logits-out $T/l.f32 2>/dev/null || fail "eval"
[ "$(stat -c %s $T/l.f32)" -eq $((3 * 128256 * 4)) ] || fail "eval output size"
# a position's logits do not depend on what follows it, nor on how rows are grouped for the
# head (32 at a time): the first 40 of a 70-token eval are a 40-token eval's
long=$(seq 1 69 | awk '{printf ",%d", ($1 * 7919) % 128000}')
short=$(seq 1 39 | awk '{printf ",%d", ($1 * 7919) % 128000}')
$CTL eval --model $M --ids "128000$long" --logits-out $T/l70.f32 2>/dev/null || fail "eval of 70"
$CTL eval --model $M --ids "128000$short" --logits-out $T/l40.f32 2>/dev/null || fail "eval of 40"
cmp -s -n $((40 * 128256 * 4)) $T/l70.f32 $T/l40.f32 || fail "eval's first 40 positions differ with 70"
# with the int8 KV cache: logits of the same shape, not the F32 cache's
$CTL eval --model $M --ids 128000,9906,1917 --kv-type q8 --logits-out $T/l8.f32 2>/dev/null || fail "eval --kv-type q8"
[ "$(stat -c %s $T/l8.f32)" -eq $((3 * 128256 * 4)) ] || fail "eval --kv-type q8 output size"
cmp -s $T/l.f32 $T/l8.f32 && fail "eval --kv-type q8 gave the f32 cache's logits"

# errors: clear message, non-zero exit
expect_error "missing model" "nope.gguf: .*No such file" $CTL model inspect $T/nope.gguf
printf 'GGUF\3\0\0\0' > $T/short.gguf
expect_error "short header" "short.gguf: .*(truncated|short|end)" $CTL model inspect $T/short.gguf
echo "not a model" > $T/text.gguf
expect_error "not gguf" "text.gguf: bad magic" $CTL tokenize --model $T/text.gguf --text hi
head -c 5000000 $M > $T/cut.gguf
expect_error "truncated model" "cut.gguf: " $CTL generate --model $T/cut.gguf --prompt hi
expect_error "bad id" "outside the vocabulary" $CTL eval --model $M --ids 1,999999 --logits-out $T/x.f32
[ -e $T/x.f32 ] && fail "failed eval left its output file"
expect_error "bad id list" "bad token id" $CTL eval --model $M --ids 1,x --logits-out $T/x.f32
expect_error "bad -n" "-n: 'abc'" $CTL generate --model $M --prompt hi -n abc
expect_error "bad top-p" "top-p" $CTL generate --model $M --prompt hi --top-p 2
expect_error "prompt and chat" "usage" $CTL generate --model $M --prompt hi --chat hi
expect_error "unknown command" "unknown command" $CTL frobnicate
expect_error "unknown shape" "unknown shape" $CTL model synth --out $T/y.gguf --shape huge
expect_error "bad heads" "multiple of --kv-heads" $CTL model synth --out $T/y.gguf --heads 4 --kv-heads 3
expect_error "bad tokenizer" "nope.json" $CTL model synth --out $T/y.gguf --tokenizer $T/nope.json
[ -e $T/y.gguf ] && fail "failed synth left a file"
expect_error "ppl text too short" "need at least" $CTL perplexity --model $M --text-file $T/text.txt --ctx 4096
expect_error "bad kv type" "--kv-type: 'q4' is not f32, f16 or q8" $CTL eval --model $M --ids 1 --kv-type q4 --logits-out $T/x.f32
# q8 keys lie in groups of 4 elements of a head: a head of 6 is refused, f16 takes it
$CTL model synth --out $T/hd6.gguf --embd 384 --layers 1 --heads 64 --kv-heads 16 --ffn 128 --seed 1 2>/dev/null || fail "synth head dim 6"
expect_error "q8 head dim" "KV type q8: head dimension 6 is not a multiple of 4" $CTL eval --model $T/hd6.gguf --ids 1 --kv-type q8 --logits-out $T/x.f32
$CTL eval --model $T/hd6.gguf --ids 1 --kv-type f16 --logits-out $T/x.f32 2>/dev/null || fail "head dim 6 with f16"
expect_error "bad kernel" "BITNET_KERNEL=bogus" env BITNET_KERNEL=bogus $CTL eval --model $M --ids 1 --logits-out $T/x.f32

# placement without a daemon: bitnetd's own planner for described machines
P30=$T/p30.gguf
$CTL model synth --out $P30 --shape tiny --layers 30 --seed 2 2>/dev/null || fail "synth 30 layers"
check_plan() {  # SPEC WORKERS THREADS: the JSON plan's shape
    local js; js=$($CTL placement --model $P30 --topology "synthetic:$1" --json) ||
        { fail "placement for '$1'"; return; }
    node -e 'const j=JSON.parse(require("fs").readFileSync(0)), k=+process.argv[1], th=+process.argv[2];
      const w=j.workers; let next=0;
      if (w.length!==k) throw "workers "+w.length;
      w.forEach((x,i)=>{ if (x.node!==i||x.threads!==th||x.layers[0]!==next||x.layers[1]<=next) throw "worker "+i+" "+JSON.stringify(x); next=x.layers[1]; });
      if (next!==30||!w[0].embedding||!w[k-1].output) throw "layers end at "+next;
      if (j.nodes.length!==k||j.nodes.some(n=>n.threads!==th||!(n.weight_bytes>0))) throw "nodes";
      if (j.links.length!==k+1||j.links[1]&&!(j.links[1].crosses_nodes&&j.links[1].bytes_per_token===256*4)) throw "links "+JSON.stringify(j.links);
      if (!(j.links[k].bytes_per_token_sampled>128256*4)) throw "last link"' \
        "$2" "$3" <<<"$js" || fail "placement for '$1': $js"
}
check_plan "package:2 numa:1 core:16 pu:2" 2 32
check_plan "package:4 numa:2 core:8 pu:1" 8 8
# with KV heads to split and nothing said about the plan's shape: tensor parallelism across
# the nodes when the model fits one, a pipeline when it does not, both on many nodes
P30KV=$T/p30kv4.gguf
$CTL model synth --out $P30KV --shape tiny --heads 8 --kv-heads 4 --layers 30 --seed 2 2>/dev/null ||
    fail "synth 30 layers, 4 KV heads"
check_tp_plan() {  # SPEC STAGES RANKS: stages of RANKS ranks, on consecutive nodes
    local js; js=$($CTL placement --model $P30KV --topology "synthetic:$1" --json) ||
        { fail "tp placement for '$1'"; return; }
    node -e 'const j=JSON.parse(require("fs").readFileSync(0)), st=+process.argv[1], k=+process.argv[2];
      const w=j.workers;
      if (w.length!==st) throw "stages "+w.length;
      w.forEach((x,i)=>{ if (x.tensor_parallel!==k||x.rank_nodes.length!==k||x.rank_nodes.some((n,r)=>n!==i*k+r)) throw "stage "+i+" "+JSON.stringify(x); });
      if (j.nodes.length!==st*k) throw "nodes "+j.nodes.length;
      const ex=j.links.filter(l=>l.tensor_parallel===k);
      if (k>1&&(ex.length!==st||ex.some(l=>!l.crosses_nodes||!(l.bytes_per_token>0)))) throw "exchanges "+JSON.stringify(j.links)' \
        "$2" "$3" <<<"$js" || fail "tp placement for '$1': $js"
}
check_tp_plan "package:2 numa:1 core:16 pu:2" 1 2
check_tp_plan "package:4 numa:2 core:8 pu:1" 2 4
check_tp_plan "pack:2 [numa(memory=600MB)] core:2 pu:1" 2 1
out=$($CTL placement --model $P30 --topology "synthetic:package:2 numa:1 core:16 pu:2") || fail "placement text"
grep -q "w0     -> w1     1024 bytes (between nodes)" <<<"$out" || fail "placement text: $out"
expect_error "placement on a bad topology" "rejected by hwloc" \
    $CTL placement --model $P30 --topology "synthetic:bogus:3"
expect_error "placement without a model file" "nope.gguf" \
    $CTL placement --model $T/nope.gguf --topology "synthetic:package:2 core:2 pu:1"

echo "t_cli: $fails failures"
[ $fails -eq 0 ]
