#!/bin/sh
# SASRec from scratch, ml-1m L=50, seed 42, to convergence (patience 20)
exec nice -n 10 ./flame train --data /work/shared/data/ml-1m.txt --protocol flame --threads 1 \
  --epochs 200 --method sasrec --seed 42 --out sasrec-s42.ckpt > sasrec-s42.json 2> sasrec-s42.log
