"""Model benchmark: the three models in models/ (ViT, TransformerClassifier, Seq2Seq) beside PyTorch twins.

    python benchmarks/bench_models.py [--threads 1,2] [--only vit_tiny,vit_small,transformer,seq2seq,overhead]
                                      [--quick] [--markdown]

Each model is built twice: the minitensor model, and a PyTorch model written from modules of the same names (so
the state-dict keys match) into which the minitensor weights are copied; both run float32 on the same seeded
batch, and the script checks that their initial losses agree before timing anything, so both do the same work.
Measured, per thread count:

- training step: zero_grad, forward, cross-entropy, backward, AdamW step (default hyper-parameters, lr 1e-3);
- inference batch: eval() and no_grad, forward only (PyTorch takes its own inference fast path where it has one);
- peak memory of a training step: in a fresh process per model and framework (importing only that framework),
  ru_maxrss after a few training steps minus ru_maxrss right after building the model and the data, in MiB;
- per-op overhead: a 1-element add, forward only (plain tensors) and forward + backward (requires_grad inputs,
  .backward() on the sum), in microseconds.

As in bench_kernels.py, each thread count runs in a child process started with OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS / MKL_NUM_THREADS set before any library loads (and torch.set_num_threads(n),
mt.set_num_threads(n)). Within a child the contenders alternate: after a few warm-up steps each, every round runs
a few steps of each contender in turn, with a short idle pause between contenders (spinning OpenMP workers of
the one that just ran would otherwise steal the cores of the next); the median of all per-step times is
reported. Ratios are minitensor / PyTorch (time or memory: > 1 means minitensor is slower or larger).

The Seq2Seq model is raced against two PyTorch twins: LSTMCell stepped in a Python loop for the encoder (masked,
as minitensor's encoder is) and the decoder, and the fused nn.LSTM (encoder over pack_padded_sequence, decoder
over the whole target). Both ratios are reported; the minitensor times are the same measurement.

GFLOP/s of minitensor's training step: the matmul / conv FLOPs of the forward pass (2 * M * N * K per GEMM,
counted analytically per configuration by the *_flops functions below), times 3 for forward + backward (one GEMM
for the input gradient and one for the weight gradient per forward GEMM), over the median step time. Elementwise
ops, softmax, normalisation and the optimizer are not counted, so this is a lower bound on the work done.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

from timing import timeit

SEED = 0
CONFIGS = ["vit_tiny", "vit_small", "transformer", "seq2seq"]
ALL = CONFIGS + ["overhead"]
TITLES = {"vit_tiny": "ViT-tiny (1x28x28, p7, d64, L4, b128)", "vit_small": "ViT-small (3x32x32, p4, d128, L6, b64)",
          "transformer": "Transformer cls (S64, d128, L2, b64, pad)", "seq2seq": "LSTM seq2seq + attn (S20, T20, b64)"}

VIT_TINY = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=64, depth=4, heads=4, mlp_dim=128)
VIT_SMALL = dict(image_size=32, patch_size=4, in_channels=3, num_classes=10, dim=128, depth=6, heads=4, mlp_dim=256)
BATCH = {"vit_tiny": 128, "vit_small": 64, "transformer": 64, "seq2seq": 64}
# vocab 1000 (id 0 = <pad>), length 64 with random real lengths 32..64, 4 classes, mean pooling, post-norm, dropout 0
TRANSFORMER = dict(vocab_size=1000, num_classes=4, dim=128, depth=2, heads=4, mlp_dim=256, pad_id=0)
TRANSFORMER_LEN, TRANSFORMER_MIN_LEN = 64, 32
# vocab 40 / 40 (0 = <pad>, 2 = <start>, 3 = <end>), embed 64, hidden 128, one layer, dot attention;
# source (N, 20) with real lengths 10..20; target (N, 20) = <start> y_1..y_k <end> <pad>.., k in 8..18, so the
# decoder runs 19 steps, teacher forcing 1.0
SEQ2SEQ = dict(src_vocab_size=40, tgt_vocab_size=40, emb_dim=64, hidden_size=128)
SRC_LEN, TGT_LEN = 20, 20


# -- analytic FLOP counts (forward pass; matmul and conv only) -------------------------------------------------
def vit_flops(c, n):
    d, m, h = c["dim"], c["mlp_dim"], c["heads"]
    p = (c["image_size"] // c["patch_size"]) ** 2
    t = p + 1
    patch = 2 * n * p * d * c["in_channels"] * c["patch_size"] ** 2  # the patchify conv, one GEMM
    block = (2 * n * t * d * 3 * d  # q, k, v projections
             + 2 * n * h * t * t * (d // h) * 2  # Q K^T and softmax(.) V per head
             + 2 * n * t * d * d  # output projection
             + 2 * n * t * d * m * 2)  # MLP up and down
    return patch + c["depth"] * block + 2 * n * d * c["num_classes"]


def transformer_flops(c, n, s=TRANSFORMER_LEN):
    d, f = c["dim"], c["mlp_dim"]
    # padded keys are masked but still computed: full S x S attention
    layer = 2 * n * s * d * 3 * d + 2 * n * s * s * d * 2 + 2 * n * s * d * d + 2 * n * s * d * f * 2
    return c["depth"] * layer + 2 * n * d * c["num_classes"]


def seq2seq_flops(c, n, s=SRC_LEN, t=TGT_LEN - 1):
    e, h, v = c["emb_dim"], c["hidden_size"], c["tgt_vocab_size"]
    lstm = lambda steps: 2 * n * steps * (e + h) * 4 * h  # input and recurrent projections, every step (masked)
    attention = 2 * n * t * s * h * 2  # scores h . s_j and the context
    return lstm(s) + lstm(t) + attention + 2 * n * t * 2 * h * h + 2 * n * t * h * v


def train_flops(name):
    n = BATCH[name]
    fwd = {"vit_tiny": lambda: vit_flops(VIT_TINY, n), "vit_small": lambda: vit_flops(VIT_SMALL, n),
           "transformer": lambda: transformer_flops(TRANSFORMER, n), "seq2seq": lambda: seq2seq_flops(SEQ2SEQ, n)}
    return 3 * fwd[name]()


# -- data ------------------------------------------------------------------------------------------------------
def make_data(name):
    """numpy inputs and targets of one batch, seeded; (inputs tuple, target) with int64 ids."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    n = BATCH[name]
    if name.startswith("vit"):
        c = VIT_TINY if name == "vit_tiny" else VIT_SMALL
        images = rng.standard_normal((n, c["in_channels"], c["image_size"], c["image_size"])).astype(np.float32)
        return (images,), rng.integers(0, c["num_classes"], n).astype(np.int64)
    if name == "transformer":
        ids = np.zeros((n, TRANSFORMER_LEN), dtype=np.int64)
        for i, k in enumerate(rng.integers(TRANSFORMER_MIN_LEN, TRANSFORMER_LEN + 1, n)):
            ids[i, :k] = rng.integers(1, TRANSFORMER["vocab_size"], k)
        ids[0, :] = rng.integers(1, TRANSFORMER["vocab_size"], TRANSFORMER_LEN)  # one full row: length stays 64
        return (ids,), rng.integers(0, TRANSFORMER["num_classes"], n).astype(np.int64)
    src = np.zeros((n, SRC_LEN), dtype=np.int64)
    for i, k in enumerate(rng.integers(SRC_LEN // 2, SRC_LEN + 1, n)):
        src[i, :k] = rng.integers(4, SEQ2SEQ["src_vocab_size"], k)
    src[0, :] = rng.integers(4, SEQ2SEQ["src_vocab_size"], SRC_LEN)
    tgt = np.zeros((n, TGT_LEN), dtype=np.int64)
    for i, k in enumerate(rng.integers(TGT_LEN - 12, TGT_LEN - 1, n)):
        tgt[i, 0], tgt[i, 1:k + 1], tgt[i, k + 1] = 2, rng.integers(4, SEQ2SEQ["tgt_vocab_size"], k), 3
    return (src, tgt), tgt[:, 1:].reshape(-1).copy()


# -- minitensor side -------------------------------------------------------------------------------------------
def build_minitensor(name):
    """(model, train_step(), infer()) on the seeded batch; train_step returns the loss tensor."""
    import minitensor as mt
    from minitensor.nn import functional as F

    mt.manual_seed(SEED)
    if name.startswith("vit"):
        from minitensor.models.vit import ViT

        model = ViT(**(VIT_TINY if name == "vit_tiny" else VIT_SMALL))
    elif name == "transformer":
        from minitensor.models.transformer import TransformerClassifier

        model = TransformerClassifier(**TRANSFORMER, dropout=0.0, max_len=TRANSFORMER_LEN, pooling="mean")
    else:
        from minitensor.models.seq2seq import Seq2Seq

        model = Seq2Seq(**SEQ2SEQ, attention=True)
    inputs, target = make_data(name)
    inputs, target = [mt.tensor(x) for x in inputs], mt.tensor(target)
    opt = mt.optim.AdamW(model.parameters(), lr=1e-3)
    if name == "seq2seq":
        loss_of = lambda: model.loss(*inputs, teacher_forcing=1.0)
        infer_fn = lambda: model(*inputs, teacher_forcing=1.0)
    else:
        loss_of = lambda: F.cross_entropy(model(*inputs), target)
        infer_fn = lambda: model(*inputs)

    def train_step():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        opt.step()
        return loss

    def infer():
        with mt.no_grad():
            return infer_fn()

    return model, train_step, infer, loss_of


# -- PyTorch side ----------------------------------------------------------------------------------------------
def torch_classes():
    """The PyTorch twins (defined once torch is imported): the ViT and classifier of minitensor.testing.torch_twins
    (shared with tests/models/test_model_parity.py) and the two seq2seq variants raced here."""
    import torch
    from torch import nn as tnn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Seq2SeqBase(tnn.Module):
        def __init__(self, src_vocab_size, tgt_vocab_size, emb_dim, hidden_size, cell, pad_id=0):
            super().__init__()
            self.pad_id = pad_id
            self.src_embedding = tnn.Embedding(src_vocab_size, emb_dim, padding_idx=pad_id)
            self.tgt_embedding = tnn.Embedding(tgt_vocab_size, emb_dim, padding_idx=pad_id)
            rnn = (lambda: tnn.LSTMCell(emb_dim, hidden_size)) if cell else (
                lambda: tnn.LSTM(emb_dim, hidden_size, batch_first=True))
            self.encoder, self.decoder = rnn(), rnn()
            self.combine = tnn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.out = tnn.Linear(hidden_size, tgt_vocab_size)

        def readout(self, h, memory, mask):
            scores = (h @ memory.transpose(1, 2)).masked_fill(mask.unsqueeze(1), float("-inf"))
            context = torch.softmax(scores, dim=-1) @ memory
            return self.out(torch.tanh(self.combine(torch.cat([context, h], dim=-1))))

        def loss(self, src, tgt):
            logits = self(src, tgt)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1),
                                                     ignore_index=self.pad_id)

    class TorchSeq2SeqFused(Seq2SeqBase):
        """nn.LSTM: the encoder over pack_padded_sequence, the decoder over the whole (teacher-forced) target."""

        def __init__(self, **config):
            super().__init__(**config, cell=False)

        def forward(self, src, tgt):
            mask = src == self.pad_id
            packed = pack_padded_sequence(self.src_embedding(src), (~mask).sum(1), batch_first=True,
                                          enforce_sorted=False)
            outputs, state = self.encoder(packed)
            memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
            h, _ = self.decoder(self.tgt_embedding(tgt[:, :-1]), state)
            return self.readout(h, memory, mask)

    class TorchSeq2SeqCell(Seq2SeqBase):
        """LSTMCell stepped in a Python loop; the encoder state is held at <pad> positions (minitensor's scheme)."""

        def __init__(self, **config):
            super().__init__(**config, cell=True)

        def forward(self, src, tgt):
            mask = src == self.pad_id
            valid = (~mask).unsqueeze(-1)
            x = self.src_embedding(src)
            h = c = x.new_zeros(src.shape[0], self.encoder.hidden_size)
            outputs = []
            for t in range(src.shape[1]):
                h_new, c_new = self.encoder(x[:, t], (h, c))
                h, c = torch.where(valid[:, t], h_new, h), torch.where(valid[:, t], c_new, c)
                outputs.append(h)
            memory = torch.stack(outputs, dim=1)
            y = self.tgt_embedding(tgt[:, :-1])
            outputs = []
            for t in range(y.shape[1]):
                h, c = self.decoder(y[:, t], (h, c))
                outputs.append(h)
            return self.readout(torch.stack(outputs, dim=1), memory, mask)

    from minitensor.testing.torch_twins import TorchClassifier, TorchViT

    return dict(TorchViT=TorchViT, TorchClassifier=TorchClassifier, TorchSeq2SeqFused=TorchSeq2SeqFused,
                TorchSeq2SeqCell=TorchSeq2SeqCell)


def build_torch(name, variant=None, ours=None):
    """(model, train_step(), infer(), loss_of()); with `ours` (a minitensor model), its weights are copied in.
    variant (seq2seq only): "cell" (LSTMCell loop) or "fused" (nn.LSTM)."""
    import numpy as np
    import torch
    from torch.nn import functional as TF

    torch.manual_seed(SEED)
    classes = torch_classes()
    if name.startswith("vit"):
        model = classes["TorchViT"](**(VIT_TINY if name == "vit_tiny" else VIT_SMALL))
    elif name == "transformer":
        from minitensor.nn.positional import sinusoidal_table

        pe = ours.positional.pe.numpy() if ours is not None else sinusoidal_table(TRANSFORMER_LEN + 1, TRANSFORMER["dim"])
        model = classes["TorchClassifier"](pe, **TRANSFORMER)
    else:
        model = classes["TorchSeq2SeqCell" if variant == "cell" else "TorchSeq2SeqFused"](**SEQ2SEQ)
    if ours is not None:
        # nn.LSTM keys weight_ih_l0 ... become LSTMCell's weight_ih ... for the cell twin
        rename = (lambda k: k[:-3] if variant == "cell" and k.endswith("_l0") else k)
        ours_sd = {rename(k): np.array(v.numpy(), dtype=np.float32) for k, v in ours.state_dict().items()}
        theirs_sd = model.state_dict()
        if set(ours_sd) != set(theirs_sd):
            raise RuntimeError(f"{name}: state-dict keys differ: {sorted(set(ours_sd) ^ set(theirs_sd))}")
        for k, v in ours_sd.items():
            if tuple(v.shape) != tuple(theirs_sd[k].shape):
                raise RuntimeError(f"{name}: {k} has shape {v.shape} here, {tuple(theirs_sd[k].shape)} in torch")
        model.load_state_dict({k: torch.from_numpy(v) for k, v in ours_sd.items()})
    model = model.float().train()
    inputs, target = make_data(name)
    inputs, target = [torch.from_numpy(x) for x in inputs], torch.from_numpy(target)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if name == "seq2seq":
        loss_of = lambda: model.loss(*inputs)
    else:
        loss_of = lambda: TF.cross_entropy(model(*inputs), target)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        opt.step()
        return loss

    def infer():
        with torch.no_grad():
            return model(*inputs)

    return model, train_step, infer, loss_of


# -- timing ----------------------------------------------------------------------------------------------------
PAUSE = 0.1


def race_steps(contenders, warmup, rounds, steps):
    """{name: median seconds per call}: warm-up calls, then `rounds` rounds, each running `steps` timed calls
    of every contender in turn (an idle pause before each contender's turn)."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(PAUSE)
            for _ in range(steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def race_calls(contenders, rounds, min_time):
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(PAUSE)
            times[name].append(timeit(fn, min_time))
    return {name: statistics.median(v) for name, v in times.items()}


def schedule(quick):
    """(warmup, rounds, train steps per round, inference calls per round). The default run makes 7 x 3 timed
    training steps and 7 x 5 inference batches per contender: about 2 to 3 minutes in all on 2 idle cores."""
    return (0, 1, 1, 1) if quick else (3, 7, 3, 5)


def check_same_work(name, ours_loss, theirs_loss):
    """The twins start from the same weights and data, so the initial losses agree (float32 tolerance)."""
    for label, fn in theirs_loss.items():
        a, b = float(ours_loss().item()), float(fn().item())
        if not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5):
            raise RuntimeError(f"{name}: initial loss {a} (minitensor) != {b} ({label}): the twins differ")


def child(threads, names, quick):
    import minitensor as mt
    import torch

    from minitensor import _C

    torch.set_num_threads(threads)
    mt.set_num_threads(threads)
    warmup, rounds, train_steps, infer_steps = schedule(quick)
    out = {"threads": threads, "isa": _C.info()["isa"], "torch": torch.__version__, "models": {}}
    for name in [n for n in names if n in CONFIGS]:
        ours, m_train, m_infer, m_loss = build_minitensor(name)
        variants = ["cell", "fused"] if name == "seq2seq" else [None]
        twins = {v: build_torch(name, v, ours) for v in variants}
        check_same_work(name, m_loss, {f"torch {v or ''}".strip(): t[3] for v, t in twins.items()})
        key = lambda v: "torch" if v is None else f"torch_{v}"
        ours.train()
        for t in twins.values():
            t[0].train()
        train = race_steps({"minitensor": m_train, **{key(v): t[1] for v, t in twins.items()}},
                           warmup, rounds, train_steps)
        ours.eval()
        for t in twins.values():
            t[0].eval()
        infer = race_steps({"minitensor": m_infer, **{key(v): t[2] for v, t in twins.items()}},
                           warmup, rounds, infer_steps)
        out["models"][name] = {"train": train, "infer": infer}
        del ours, twins
    if "overhead" in names:
        min_time = 0.01 if quick else 0.1
        a, b = mt.ones(1), mt.ones(1)
        ta, tb = torch.ones(1), torch.ones(1)
        ga, gb = mt.ones(1, requires_grad=True), mt.ones(1, requires_grad=True)
        tga, tgb = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
        fwd = race_calls({"minitensor": lambda: a + b, "torch": lambda: ta + tb}, rounds + 2, min_time)
        bwd = race_calls({"minitensor": lambda: (ga + gb).sum().backward(),
                          "torch": lambda: (tga + tgb).sum().backward()}, rounds + 2, min_time)
        out["overhead"] = {"fwd": fwd, "fwd_bwd": bwd}
    return out


def memory_child(threads, name, framework, quick):
    """MiB by which a few training steps raise the peak RSS over what building the model and data reached."""
    steps = 1 if quick else 3
    if framework == "minitensor":
        import minitensor as mt

        mt.set_num_threads(threads)
        model, train_step, _, _ = build_minitensor(name)
    else:
        import torch

        torch.set_num_threads(threads)
        model, train_step, _, _ = build_torch(name, framework.partition("_")[2] or None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(steps):
        train_step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mib": (after - before) / 1024}


def memory_frameworks(name):
    return ["minitensor", "torch_cell", "torch_fused"] if name == "seq2seq" else ["minitensor", "torch"]


# -- report ----------------------------------------------------------------------------------------------------
def render(header, rows, markdown, align):
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(s.rjust(w) if a == "r" else s.ljust(w) for s, w, a in zip(r, widths, align))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def report(runs, memory, markdown):
    lines = []
    out = lines.append
    ms = lambda s: f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}"
    for r in runs:
        th = r["threads"]
        out(f"\n### {th} thread(s) — ISA {r['isa']}, torch {r['torch']} (ratios: minitensor / PyTorch)\n")
        header = ["model", "vs", "train mt ms", "train torch ms", "ratio", "mt GFLOP/s", "infer mt ms",
                  "infer torch ms", "ratio", "mem mt MiB", "mem torch MiB", "ratio"]
        rows = []
        for name, res in r["models"].items():
            versus = [("torch_cell", "LSTMCell loop"), ("torch_fused", "nn.LSTM fused")] if name == "seq2seq" \
                else [("torch", "PyTorch")]
            for key, label in versus:
                tr, inf = res["train"], res["infer"]
                mem = memory.get((th, name), {})
                m_mem, t_mem = mem.get("minitensor"), mem.get(key)
                mem_cells = ([f"{m_mem:.1f}", f"{t_mem:.1f}", f"{m_mem / t_mem:.2f}" if t_mem > 0 else "-"]
                             if m_mem is not None and t_mem is not None else ["-", "-", "-"])
                rows.append([TITLES[name], label, ms(tr["minitensor"]), ms(tr[key]), f"{tr['minitensor'] / tr[key]:.2f}",
                             f"{train_flops(name) / tr['minitensor'] / 1e9:.1f}", ms(inf["minitensor"]),
                             ms(inf[key]), f"{inf['minitensor'] / inf[key]:.2f}"] + mem_cells)
        if rows:
            out(render(header, rows, markdown, "llrrrrrrrrrr"))
        if "overhead" in r:
            o = r["overhead"]
            us = lambda s: f"{s * 1e6:.2f}"
            rows = [[case, us(o[k]["minitensor"]), us(o[k]["torch"]), f"{o[k]['minitensor'] / o[k]['torch']:.2f}"]
                    for case, k in [("1-element add, forward", "fwd"),
                                    ("1-element add, forward + backward of the sum", "fwd_bwd")]]
            out("")
            out(render(["per-op overhead", "minitensor us", "torch us", "ratio"], rows, markdown, "lrrr"))
    print("\n".join(lines))


def run(args, threads, env_extra):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), **env_extra)
    cmd = [sys.executable, __file__, "--threads", str(threads)] + args + (["--quick"] if QUICK else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {' '.join(args)} (threads {threads}) failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


QUICK = False


def main():
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke test, numbers not meaningful")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for RESULTS.md)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)  # name:framework
    args = parser.parse_args()
    QUICK = args.quick
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {ALL}")
    if args.child:
        print(json.dumps(child(threads[0], names, args.quick)))
        return
    if args.memory:
        name, framework = args.memory.split(":")
        print(json.dumps(memory_child(threads[0], name, framework, args.quick)))
        return
    start = time.perf_counter()
    runs, memory = [], {}
    for th in threads:
        runs.append(run(["--child", "--only", ",".join(names)], th, {}))
        for name in [n for n in names if n in CONFIGS]:
            memory[(th, name)] = {fw: run(["--memory", f"{name}:{fw}"], th, {})["mib"]
                                  for fw in memory_frameworks(name)}
    report(runs, memory, args.markdown)
    print(f"\n({time.perf_counter() - start:.0f} s{', --quick: not meaningful' if args.quick else ''})")


if __name__ == "__main__":
    main()
