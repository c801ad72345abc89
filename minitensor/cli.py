"""The command line: `python -m minitensor <command>` (also installed as `minitensor`)."""
import argparse
import sys


def _demo(args):
    """A few autograd steps: fit y = 3x - 1 with a weight and a bias, printing the loss as it falls."""
    import minitensor as mt

    mt.manual_seed(args.seed)
    x = mt.linspace(-1, 1, 32).reshape(32, 1)
    y = 3 * x - 1
    w = mt.zeros(1, 1, requires_grad=True)
    b = mt.zeros(1, requires_grad=True)
    for step in range(args.steps):
        loss = ((x @ w + b - y) ** 2).mean()
        w.grad = b.grad = None
        loss.backward()
        with mt.no_grad():
            w -= 0.5 * w.grad
            b -= 0.5 * b.grad
        if step % max(args.steps // 5, 1) == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.6f}  w {w.item():+.4f}  b {b.item():+.4f}")
    print(f"learned y = {w.item():.3f} x {b.item():+.3f}  (target: y = 3 x - 1)")
    info = mt.backend_info()
    print(f"backend {info['backend']} ({info['isa']}, {info['threads']} threads), engine {info['engine']}")
    return 0


def _info(args):
    import minitensor as mt

    for key, value in mt.backend_info().items():
        print(f"{key:10s} {value}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="minitensor", description="minitensor: deep learning on the CPU")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a few autograd steps (fit a line)")
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    info = sub.add_parser("info", help="show the backend, ISA path, threads and engine")
    info.set_defaults(run=_info)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)
