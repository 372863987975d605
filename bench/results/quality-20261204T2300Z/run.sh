#!/bin/sh
# Issue 3, item 1: two more FLAME variants against the released anchor, seed 42, one BLAS
# thread each at nice 19 (binary of 4bd1eae; FLAME unchanged since c4eabc5).
#   blocks8:   per-block modules (embedding, block 1, block 2), all 8 paths each step
#   blockdiag: the paper's 2 modules under the block-diagonal mask (the ablation)
# Run from a directory holding ./flame and released.ckpt (flame import-pt of the .pt).
DATA=../shared/data/amazon-beauty.txt
[ -f "$DATA" ] || DATA=/work/shared/data/amazon-beauty.txt
common="--data $DATA --protocol flame --threads 1 --epochs 200 --method flame --anchor released.ckpt --seed 42"
nice -n 19 ./flame train $common --modules blocks --out blocks8.ckpt > blocks8.json 2> blocks8.log &
nice -n 19 ./flame train $common --mask blockdiag --out blockdiag.ckpt > blockdiag.json 2> blockdiag.log &
wait
