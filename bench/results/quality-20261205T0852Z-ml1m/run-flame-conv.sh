#!/bin/sh
# FLAME against the converged SASRec run (anchor-conv.ckpt = sasrec-s42.ckpt, its best epoch),
# ml-1m L=50, seed 42, the paper's settings (R = 200 epochs), patience 20. Resumable: rerun.
exec nice -n 10 ./flame-deb5462 train --data /work/shared/data/ml-1m.txt --protocol flame --threads 1 \
  --epochs 200 --method flame --anchor anchor-conv.ckpt --seed 42 --out flame-conv-s42.ckpt \
  --state flame-conv-s42.state >> flame-conv-s42.json 2>> flame-conv-s42.log
