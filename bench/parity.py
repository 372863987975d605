#!/usr/bin/python3
"""The FLAME loss of flame against torch_ref.py's flame_loss on the same weights and samples
(bench/parity.sh drives it). Reads flame checkpoints (model/ckpt.c's format) into
torch_ref.SASRec, dropout off (eval mode), every training sample of DATA in one batch, lambda 1.

usage: parity.py DATA ANCHOR.ckpt START.ckpt FLAME.json TAU [AFTER.ckpt LR]
  FLAME.json is the last stdout line of the `flame train --method flame` step that started
  from the learnable network in START.ckpt: its last_loss must be the reference's loss to
  1e-5 (relative). With AFTER.ckpt (the learnable network after one Adam step at LR from the
  same start, on the same batch) the step is also compared with the reference's gradient g:
  Adam's first step moves every parameter by LR g / (|g| + 1e-8), so wherever |g| > 1e-5 the
  signs must agree (and within 1e-3), and no parameter with g = 0 may move.
  Prints one line, "ok ..." or "FAIL ...", and exits 1 on a failure."""
import json, os, struct, sys
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/bench"))
import torch_ref as R  # noqa: E402


def load_ckpt(path):
    """Header fields and the parameter block of a FLAMECKP file (version 1)."""
    b = open(path, "rb").read()
    assert b[:8] == b"FLAMECKP" and struct.unpack_from("<I", b, 8)[0] == 1, path
    C, NL, NH, FF, L = struct.unpack_from("<5I", b, 16)
    NI, _step, n = struct.unpack_from("<3Q", b, 44)
    return dict(C=C, NL=NL, NH=NH, FF=FF, L=L, NI=NI,
                p=np.frombuffer(b, dtype="<f4", count=n, offset=76))


def tensors(m):
    """m's parameters in flame's block order (model.h MODEL_T_*), per block stacked."""
    e, NL = m.enc, len(m.enc.qkv)
    per = lambda f: [f(i) for i in range(NL)]  # noqa: E731
    return [[m.pos.weight], [m.ln.weight], [m.ln.bias],
            per(lambda i: e.qkv[i].weight), per(lambda i: e.qkv[i].bias),
            per(lambda i: e.o[i].weight), per(lambda i: e.o[i].bias),
            per(lambda i: e.ln1[i].weight), per(lambda i: e.ln1[i].bias),
            per(lambda i: e.f1[i].weight), per(lambda i: e.f1[i].bias),
            per(lambda i: e.f2[i].weight), per(lambda i: e.f2[i].bias),
            per(lambda i: e.ln2[i].weight), per(lambda i: e.ln2[i].bias), [m.item.weight]]


def to_torch(ck):
    m = R.SASRec(ck["NI"], ck["L"], d=ck["C"], heads=ck["NH"], blocks=ck["NL"])
    assert m.enc.f1[0].out_features == ck["FF"]
    o = 0
    with torch.no_grad():
        for group in tensors(m):
            for t in group:
                t.copy_(torch.from_numpy(ck["p"][o:o + t.numel()].reshape(t.shape).copy()))
                o += t.numel()
    assert o == len(ck["p"]), "parameter count"
    return m.eval()


def main():
    data, anc, start, flame_json, tau = sys.argv[1:5] + [float(sys.argv[5])]
    ours = json.loads(open(flame_json).read().strip().splitlines()[-1])["last_loss"]
    seqs, _ = R.load(data)
    a, ck = to_torch(load_ckpt(anc)), load_ckpt(start)
    l = to_torch(ck)
    X, Y = R.train_samples(seqs, ck["L"])
    loss = R.flame_loss(l, a, X, Y, 1.0, tau)
    rel = abs(ours - loss.item()) / abs(loss.item())
    ok = rel <= 1e-5
    line = (f"L={ck['L']} tau={tau:g}: {len(Y)} samples, loss flame {ours:.7g} torch_ref "
            f"{loss.item():.7g} (relative difference {rel:.1e})")
    if len(sys.argv) > 6:
        loss.backward()
        g = torch.cat([t.grad.reshape(-1) for grp in tensors(l) for t in grp]).double().numpy()
        step = (ck["p"].astype(np.float64) - load_ckpt(sys.argv[6])["p"]) / float(sys.argv[7])
        want = g / (np.abs(g) + 1e-8)
        big = np.abs(g) > 1e-5  # where Adam's eps does not blur the direction
        disagree = int((np.sign(step[big]) != np.sign(want[big])).sum())
        diff = float(np.abs(step[big] - want[big]).max())
        moved = int((np.abs(step[g == 0]) > 1e-3).sum())
        ok = ok and disagree == 0 and diff <= 1e-3 and moved == 0
        line += (f"; Adam step against the reference gradient: {int(big.sum())} of {len(g)}"
                 f" parameters compared, {disagree} signs disagree, largest difference"
                 f" {diff:.1e}, {moved} moved without gradient")
    print(("ok   " if ok else "FAIL ") + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
