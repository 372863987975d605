#!/bin/sh
# Issue 3, item 1, binary of f79803b (model code as of 7328357): the paper's FLAME settings
# and plain SASRec at seeds 3 and 4 (the released anchor), four jobs of one BLAS thread each
# at nice 19 on two cores, so the wall times are about twice those of a job alone. Run from a
# directory holding ./flame and released.ckpt. `bench/quality.sh --seeds 3,4 --jobs
# sasrec,flame-released` now runs the same jobs (two at a time) and prints the paired table.
DATA=../shared/data/amazon-beauty.txt
[ -f "$DATA" ] || DATA=/work/shared/data/amazon-beauty.txt
for s in 3 4; do
  common="--data $DATA --protocol flame --threads 1 --epochs 200 --seed $s"
  nice -n 19 ./flame train $common --method flame --anchor released.ckpt --out flame-s$s.ckpt > flame-s$s.json 2> flame-s$s.log &
  nice -n 19 ./flame train $common --method sasrec --out sasrec-s$s.ckpt > sasrec-s$s.json 2> sasrec-s$s.log &
done
wait
