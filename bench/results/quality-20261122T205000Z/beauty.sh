#!/bin/bash
# issue 3 item 1: warm-started FLAME variants against the released anchor (lambda held at 1)
cd /work/qbin3
D=/work/shared/data/amazon-beauty.txt
F=/work/qbin3/flame
C=(--data $D --protocol flame --threads 1 --seed 42 --method flame --anchor released.ckpt --init anchor)
$F train "${C[@]}" --lambda-r 1 --epochs 10 --patience 4 --out warm-l1.ckpt > warm-l1.json 2> warm-l1.log
$F train "${C[@]}" --lambda-r 1 --lr 3e-4 --epochs 10 --patience 4 --out warm-l1-lr3e-4.ckpt > warm-l1-lr3e-4.json 2> warm-l1-lr3e-4.log
echo done > beauty.done
