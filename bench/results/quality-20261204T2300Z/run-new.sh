#!/bin/sh
# Issue 3, item 1 at 7328357 (dropout keys of a step's passes no longer overlap): the paper's
# FLAME settings and plain SASRec, seed 42, released anchor, one BLAS thread each at nice 19.
# Run from a directory holding ./flame and released.ckpt. $1: flame | sasrec.
DATA=../shared/data/amazon-beauty.txt
[ -f "$DATA" ] || DATA=/work/shared/data/amazon-beauty.txt
common="--data $DATA --protocol flame --threads 1 --epochs 200 --seed 42"
case "$1" in
flame) nice -n 19 ./flame train $common --method flame --anchor released.ckpt --out flame.ckpt > flame.json 2> flame.log ;;
sasrec) nice -n 19 ./flame train $common --method sasrec --out sasrec.ckpt > sasrec.json 2> sasrec.log ;;
esac
