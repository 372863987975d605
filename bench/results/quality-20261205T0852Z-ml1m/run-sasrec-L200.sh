#!/bin/sh
# SASRec from scratch on ml-1m at L=200 (--protocol flame, seed 42, full epochs of 647,430
# samples, patience 20), to convergence over several stops: resumable, rerun this script
# (check `ps` first: two processes must never share the state file).
cd "$(dirname "$0")"
exec nice -n 10 ./flame-deb5462 train --data /work/shared/data/ml-1m.txt --protocol flame --threads 1 \
  --maxlen 200 --epochs 200 --method sasrec --seed 42 --out sasrec-L200-s42.ckpt \
  --state sasrec-L200-s42.state >> sasrec-L200-s42.json 2>> sasrec-L200-s42.log
