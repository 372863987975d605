#!/usr/bin/env bash
# issue 3, 2026-12-04 (second stop of the day): FLAME at NT-Xent tau 2, the paper's settings
# otherwise, released anchor, seed 42, until patience 20. Run from a folder holding a Release
# `flame` of 3b2192e and released.ckpt (`flame import-pt` of
# ../shared/data/flame-anchors/amazon-beauty.pt); stopped (SIGSTOP) during the issue-5
# measurements of RESULTS 15, so its wall time is inflated.
nice -n 19 ./flame train --data ../shared/data/amazon-beauty.txt --protocol flame --threads 1 \
  --epochs 200 --method flame --anchor released.ckpt --seed 42 --tau 2 --out flame-tau2.ckpt \
  > flame-tau2.json 2> flame-tau2.log
