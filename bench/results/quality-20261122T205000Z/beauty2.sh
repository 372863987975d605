#!/bin/bash
# issue 3 item 1: FLAME from random init against the released anchor, lambda decaying to 1e-2
# (instead of 1e-5) over the 200-epoch schedule: a stronger pull towards the anchor late on
cd /work/qbin3
/work/qbin3/flame train --data /work/shared/data/amazon-beauty.txt --protocol flame --threads 1 --seed 42 \
  --method flame --anchor released.ckpt --lambda-r 0.01 --out scratch-lr1e-2.ckpt > scratch-lr1e-2.json 2> scratch-lr1e-2.log
