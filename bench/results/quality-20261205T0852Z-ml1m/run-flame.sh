#!/bin/sh
# FLAME against the SASRec run's best checkpoint of epochs 1-20 (anchor-e20.ckpt), ml-1m L=50,
# seed 42, the paper's settings (R = 200 epochs), patience 20. Resumable: rerun this script.
exec nice -n 10 ./flame-deb5462 train --data /work/shared/data/ml-1m.txt --protocol flame --threads 1 \
  --epochs 200 --method flame --anchor anchor-e20.ckpt --seed 42 --out flame-s42.ckpt \
  --state flame-s42.state >> flame-s42.json 2>> flame-s42.log
