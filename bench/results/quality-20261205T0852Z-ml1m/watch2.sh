#!/bin/sh
# Waits for the SASRec run to end, takes its best checkpoint as the anchor, starts FLAME.
for i in $(seq 1 20000); do
  if grep -q '^{' sasrec-s42.json; then
    cp sasrec-s42.ckpt anchor-conv.ckpt
    date -u +%FT%TZ > anchor-conv.txt
    exec ./run-flame-conv.sh
  fi
  sleep 1
done
