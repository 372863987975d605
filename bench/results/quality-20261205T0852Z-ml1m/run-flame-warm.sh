#!/bin/sh
# FLAME as fine-tuning (what the daemon does): the learnable network starts as a copy of the
# converged SASRec (anchor-conv.ckpt, --init anchor), ml-1m L=50, seed 42, lambda 1 -> 1e-5
# over 25 epochs, at most 25 epochs, patience 4 (as Beauty's warm-start row). Resumable: rerun.
exec nice -n 10 ./flame-deb5462 train --data /work/shared/data/ml-1m.txt --protocol flame --threads 1 \
  --epochs 25 --schedule 25 --patience 4 --method flame --anchor anchor-conv.ckpt --init anchor \
  --seed 42 --out flame-warm-s42.ckpt \
  --state flame-warm-s42.state >> flame-warm-s42.json 2>> flame-warm-s42.log
