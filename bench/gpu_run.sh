#!/usr/bin/env bash
# The GPU-lease procedure for a SLIQUE pretraining run, one step per device call (each call <= 10 min, <= 64 MiB in).
# State lives outside the repository on the warm machine: $W (default /tmp/sliq-gpu). Run from the repository root.
#
#   bash bench/gpu_run.sh unpack .gpu/stage/part-K.tar   # stage one part of the photo kit (bench/gpu_stage.py);
#                                                        # *.safetensors at its root (converted ImageNet trunks,
#                                                        # $SLIQ_HOME/imagenet here) go to $SLIQ_HOME/imagenet there
#   bash bench/gpu_run.sh build [ARGS...]                # sliq tadac build of the staged kit -> $W/tadac
#   bash bench/gpu_run.sh launch NAME [PRETRAIN ARGS...] # sliq pretrain --db $W/tadac --out $W/runs/NAME, detached;
#                                                        # each export is kept in $W/snap/NAME/
#   bash bench/gpu_run.sh wait SECONDS [NAME...]         # sleep while the detached runs train, show their logs, and
#                                                        # copy each NAME's latest image-encoder export to $OUT/NAME/
#   bash bench/gpu_run.sh collect NAME                   # $OUT/NAME.tar.part-*: config, tokenizer, log, export
#
# A detached run (setsid) outlives the call that started it and runs until the machine goes back; `collect` packs
# what a later session needs to continue it with `sliq pretrain --out RUN --resume` (see sliq_cli/train/state.py).
set -euo pipefail
shopt -s nullglob
W=${W:-/tmp/sliq-gpu}
export SLIQ_HOME=$W/home PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$W/photos" "$W/runs" "$SLIQ_HOME"
sliq() { python3 -m sliq_cli "$@"; }

case "$1" in
unpack)
  tar xf "$2" -C "$W/photos"
  mkdir -p "$SLIQ_HOME/imagenet"
  for f in "$W"/photos/*.safetensors; do mv "$f" "$SLIQ_HOME/imagenet/"; done
  echo "staged: $(find "$W/photos" -type f | wc -l) files, $(du -sh "$W/photos" | cut -f1); imagenet: $(ls "$SLIQ_HOME/imagenet")" ;;
build)
  shift
  sliq tadac build "$W/photos" --out "$W/tadac" --labels "$W/photos/manifest.csv" \
    --pristine 'bsds500/*' --pristine 'urban100/*' --pristine 'sun-hays80/*' --pristine 'kodak24/*' \
    --pristine 'mcmaster/*' --authentic 'imagenet-sample/*' --authentic 'clothing/*' --authentic 'dreambooth/*' \
    --authentic 'lowlight/*' --heldout 50 "$@"
  sliq tadac show "$W/tadac" ;;
launch)
  name=$2; shift 2
  setsid nohup python3 -m sliq_cli pretrain --db "$W/tadac" --out "$W/runs/$name" "$@" \
    > "$W/runs/$name.out" 2>&1 < /dev/null &
  pid=$!
  # Keep every export (--export-every overwrites RUN/export): $W/snap/NAME/{export,export-ema}-STEP, for benches of
  # earlier steps. Inline, so that it does not read this file again after a later call replaced the tree.
  setsid nohup bash -c '
    run=$1; snap=$2; pid=$3
    while kill -0 "$pid" 2>/dev/null || [ -z "$done" ]; do
      kill -0 "$pid" 2>/dev/null || done=1
      for kind in export export-ema; do
        step=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[\"pretrain\"][\"step\"])" \
               "$run/$kind/config.json" 2>/dev/null) || continue
        if [ ! -d "$snap/$kind-$step" ]; then
          sleep 5  # the export writes its files one after another
          mkdir -p "$snap" && cp -r "$run/$kind" "$snap/$kind-$step"
        fi
      done
      sleep 10
    done' snapshots "$W/runs/$name" "$W/snap/$name" "$pid" > "$W/runs/$name.snap.out" 2>&1 < /dev/null &
  sleep 2; echo "launched $name (pid $pid)" ;;
wait)
  sleep "$2"; shift 2
  for name in "$@"; do
    mkdir -p "$OUT/$name"
    cp "$W/runs/$name/export/config.json" "$W/runs/$name/export/model.safetensors" "$W/runs/$name/log.jsonl" "$OUT/$name/" || true
  done
  for log in "$W"/runs/*/log.jsonl; do echo "== $log"; tail -n 3 "$log"; done
  for out in "$W"/runs/*.out; do echo "== $out"; tail -c 600 "$out"; echo; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
collect)
  run="$W/runs/$2"
  tar cf "$W/$2.tar" -C "$run" config.json tokenizer.json log.jsonl export
  split -b 15M -d "$W/$2.tar" "$OUT/$2.tar.part-"
  cp "$run/log.jsonl" "$OUT/$2.log.jsonl"
  ls -la "$OUT" ;;
*)
  echo "unknown step $1" >&2; exit 2 ;;
esac
