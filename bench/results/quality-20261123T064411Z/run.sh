#!/usr/bin/env bash
# issue 3: the main comparison at a third seed (2): plain SASRec and FLAME (paper settings, released anchor)
cd /work/qbin12
d=/work/shared/data/amazon-beauty.txt
common=(--data $d --protocol flame --threads 1 --epochs 200 --seed 2)
nice -n 19 ./flame train "${common[@]}" --method sasrec --out sasrec-s2.ckpt > sasrec-s2.json 2> sasrec-s2.log &
nice -n 19 ./flame train "${common[@]}" --method flame --anchor released.ckpt --out flame-s2.ckpt > flame-s2.json 2> flame-s2.log &
wait
touch done-s2
