#!/bin/sh
# Waits for the SASRec run's epoch 20, snapshots its best checkpoint as the anchor, starts FLAME.
for i in $(seq 1 3000); do
  if grep -q "^epoch 20:" sasrec-s42.log; then
    cp sasrec-s42.ckpt anchor-e20.ckpt
    grep "^epoch 20:" sasrec-s42.log > anchor-e20.txt
    date -u +%FT%TZ >> anchor-e20.txt
    exec ./run-flame.sh
  fi
  sleep 1
done
