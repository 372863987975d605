#!/bin/bash
# ml-1m items 2 of issue 3 on a budget: FLAME against issue 2's 20-epoch SASRec (L=50), then a
# SASRec anchor and FLAME at L=200 with 51,200-sample epochs. Runs cut by a deadline keep
# their best checkpoint, which `flame eval` then scores on test.
cd /work/qbin3
D=/work/shared/data/ml-1m.txt
F=/work/qbin3/flame
C=(--data $D --protocol flame --threads 1 --seed 42)
timeout -s INT ${T50:-65m} $F train "${C[@]}" --method flame --anchor ml1m-sasrec-L50.ckpt --epochs 20 \
  --out ml1m-flame-L50.ckpt > ml1m-flame-L50.json 2> ml1m-flame-L50.log
$F eval --data $D --checkpoint ml1m-flame-L50.ckpt --protocol flame > ml1m-flame-L50.eval 2>&1
$F train "${C[@]}" --method sasrec --maxlen 200 --epoch-samples 51200 --epochs ${SE:-8} \
  --out ml1m-sasrec-L200.ckpt > ml1m-sasrec-L200.json 2> ml1m-sasrec-L200.log
timeout -s INT ${T200:-50m} $F train "${C[@]}" --method flame --anchor ml1m-sasrec-L200.ckpt --epoch-samples 51200 \
  --epochs 20 --out ml1m-flame-L200.ckpt > ml1m-flame-L200.json 2> ml1m-flame-L200.log
$F eval --data $D --checkpoint ml1m-flame-L200.ckpt --protocol flame > ml1m-flame-L200.eval 2>&1
echo done > ml1m.done
