#!/bin/bash
# issue 3: per-block modules (4 of 8 paths per step), released anchor, full budget
cd /work/qbin10
D=/work/shared/data/amazon-beauty.txt
./flame train --data $D --protocol flame --threads 1 --seed 42 --method flame --anchor released.ckpt \
  --modules blocks --paths 4 --out blocks.ckpt > blocks.json 2> blocks.log
echo done > blocks.done
