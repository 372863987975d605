#!/usr/bin/python3
"""The FLAME loss of flame against torch_ref.py's flame_loss on the same weights and samples
(bench/parity.sh drives it). Reads flame checkpoints (model/ckpt.c's format) into
torch_ref.SASRec, dropout off (eval mode), every training sample of DATA in one batch.

usage: parity.py DATA ANCHOR.ckpt LEARNABLE.ckpt LAMBDA TAU [AFTER.ckpt LR]
  prints JSON: the reference's cross-entropy part and whole loss. With AFTER.ckpt (the
  learnable network after one Adam step at LR from LEARNABLE.ckpt, on the same batch) it also
  compares that step with the reference's gradient g: Adam's first step moves every
  parameter by LR g / (|g| + 1e-8)."""
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
    data, anc, lrn, lam, tau = sys.argv[1:4] + [float(x) for x in sys.argv[4:6]]
    seqs, _ = R.load(data)
    a, ck = to_torch(load_ckpt(anc)), load_ckpt(lrn)
    l = to_torch(ck)
    X, Y = R.train_samples(seqs, ck["L"])
    with torch.no_grad():
        rec = torch.nn.functional.cross_entropy(l.logits(l(X)), Y - 1).item()
    loss = R.flame_loss(l, a, X, Y, lam, tau)
    out = {"samples": len(Y), "rec": rec, "loss": loss.item()}
    if len(sys.argv) > 6:
        loss.backward()
        g = torch.cat([t.grad.reshape(-1) for grp in tensors(l) for t in grp]).double().numpy()
        step = (ck["p"].astype(np.float64) - load_ckpt(sys.argv[6])["p"]) / float(sys.argv[7])
        want = g / (np.abs(g) + 1e-8)
        big = np.abs(g) > 1e-5  # where Adam's eps does not blur the direction
        out |= {"params": len(g), "compared": int(big.sum()),
                "max_abs_diff": float(np.abs(step[big] - want[big]).max()),
                "sign_disagree": int((np.sign(step[big]) != np.sign(want[big])).sum()),
                "moved_without_gradient": int((np.abs(step[g == 0]) > 1e-3).sum())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
