"""Training recipes: the data, model, loss, optimizer and evaluation of each `python -m minitensor train` task.

Each recipe exposes what minitensor.training.fit drives: `train_batches(rng)`, `train_step(batch)`, `evaluate()`,
`state()` / `load_state(state, epoch)`, `config()` and `current_lr()`; `from_checkpoint(state)` rebuilds a trained
model for evaluation and inference. Built only on minitensor's public API.
"""
import math
import numbers

import numpy as np

import minitensor as mt
from minitensor import nn, optim
from minitensor.nn import functional as F

from .seq2seq import Seq2Seq
from .transformer import TransformerClassifier
from .vit import ViT, vit_tiny

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

# A checkpoint's model config is read before the model is built, and building allocates: a crafted config (dim 2**20)
# would ask for terabytes before any shape check. Every model the recipes train is far below this.
MAX_PARAMETERS = 10**8


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_config(what, config, bounds):
    """Check `config` (a dict read from a checkpoint) against `bounds`, {key: allowed} where allowed is a range of
    ints, float (a number in [0, 1)), or a tuple of allowed values. Raises ValueError naming the key."""
    if not isinstance(config, dict):
        raise ValueError(f"{what}: expected a dict, got {type(config).__name__}")
    missing = [k for k in bounds if k not in config]
    unknown = [str(k) for k in config if k not in bounds]
    if missing or unknown:
        raise ValueError(f"{what}: " + "; ".join(f"{name} {', '.join(keys)}" for name, keys in
                                                   (("missing", missing), ("unknown", unknown)) if keys))
    for key, allowed in bounds.items():
        value = config[key]
        if isinstance(allowed, range):
            ok, expected = _is_int(value) and value in allowed, f"an int in [{allowed.start}, {allowed.stop - 1}]"
        elif allowed is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1
            expected = "a number in [0, 1)"
        else:
            ok = any(type(value) is type(a) and value == a for a in allowed)
            expected = " or ".join(repr(a) for a in allowed)
        if not ok:
            raise ValueError(f"{what}: {key} must be {expected}, got {value!r}")


def _check_size(what, parameters):
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{what}: about {parameters:,} parameters, more than the {MAX_PARAMETERS:,} any model of "
                         "the zoo can have (a corrupt or crafted config?)")


def _encoder_layers(depth, dim, mlp_dim):
    """Parameters of `depth` Transformer encoder layers (attention in/out projections, MLP, two LayerNorms)."""
    return depth * (4 * dim * dim + 4 * dim + 2 * dim * mlp_dim + mlp_dim + dim + 4 * dim)


def _plain(value):
    """value with tuples as lists, as a checkpoint gives them back."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_texts(what, texts):
    """Empty or whitespace-only text has no tokens: the models would answer from padding alone (a language for
    nothing, a NaN probability), so it is an error."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}: expected texts (str), got {type(text).__name__} at index {i}")
        if not text.strip():
            raise ValueError(f"{what}: text {i} is empty or only whitespace ({text!r}): give the words to {what}")


def _batches(order, batch_size):
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Recipe:
    name = None
    defaults = {}

    def __init__(self, epochs=None, batch_size=None, lr=None, seed=0, model_config=None, data=True):
        d = self.defaults
        self.epochs = d["epochs"] if epochs is None else epochs
        self.batch_size = d["batch_size"] if batch_size is None else batch_size
        self.lr = d["lr"] if lr is None else lr
        self.seed = seed
        ints = _is_int(self.epochs) and _is_int(self.batch_size) and _is_int(seed)
        lr_ok = isinstance(self.lr, numbers.Real) and not isinstance(self.lr, bool) and 0 < self.lr < math.inf
        if not (ints and lr_ok and self.epochs >= 1 and self.batch_size >= 1 and seed >= 0):
            raise ValueError(f"{self.name}: epochs and batch size must be ints of at least 1, lr a finite positive "
                             f"number and seed an int of at least 0, got epochs {self.epochs!r}, batch size "
                             f"{self.batch_size!r}, lr {self.lr!r}, seed {seed!r}")
        self.extra = getattr(self, "extra", {})
        if data:
            self.load_data()
        if model_config is not None:  # from a checkpoint: checked before building allocates anything
            self.check_model_config(model_config)
        mt.manual_seed(seed)
        self.model = self.build_model(model_config)
        self.ddp = None  # the DistributedDataParallel wrapper of a distributed run (see distribute)
        self.optimizer = self.scheduler = None
        if data:
            self.setup_optimizer(-(-self.num_train() // self.batch_size))

    def config(self):
        return dict(model=self.model.config, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)

    def setup_optimizer(self, steps_per_epoch):
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.defaults["weight_decay"])
        self.scheduler = optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=self.lr,
                                                       total_steps=self.epochs * steps_per_epoch,
                                                       pct_start=self.defaults.get("warmup", 0.1))

    def distribute(self):
        """Train through DistributedDataParallel (minitensor.distributed initialized); self.model stays the
        inner model, so state() and checkpoints are the same as a single process's."""
        from minitensor.distributed import DistributedDataParallel

        self.ddp = DistributedDataParallel(self.model, broadcast_buffers=False)  # our buffers are constant tables

    @property
    def net(self):
        """What training calls: the model, or its DistributedDataParallel wrapper."""
        return self.model if self.ddp is None else self.ddp

    def optimize(self, loss, n):
        """One optimizer step on `loss`, the mean over this step's n predictions (in a distributed run, n weights
        this rank's gradient, so the average over ranks is the mean over the global batch)."""
        self.optimizer.zero_grad()
        if self.ddp is not None:
            self.ddp.set_grad_weight(n)
        loss.backward()
        if self.defaults.get("clip"):
            nn.utils.clip_grad_norm_(self.model.parameters(), self.defaults["clip"])
        self.optimizer.step()
        self.scheduler.step()

    def current_lr(self):
        return self.optimizer.param_groups[0]["lr"] if self.optimizer else self.lr

    def state(self):
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), extra=self.extra)

    def load_state(self, state, epoch):
        """Resume after `epoch` epochs from state() as saved then. Raises ValueError, before loading anything,
        when the saved schedule is not the one this run follows (another length, peak lr or shape) or not at the
        step that ends epoch `epoch`: loading it would silently restart or distort the schedule."""
        self._check_schedule(state["scheduler"], epoch)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def _check_schedule(self, saved, epoch):
        fresh = self.scheduler.state_dict()
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            keys = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"the saved scheduler state is not a {type(self.scheduler).__name__}'s: it has "
                             f"{keys}, expected {sorted(fresh)}")
        moving = ("last_epoch", "_step_count", "_last_lr")  # where the schedule is; the rest is what it is
        for key in fresh:
            if key not in moving and _plain(saved[key]) != _plain(fresh[key]):
                raise ValueError(f"the saved learning-rate schedule differs from this run's: {key} is "
                                 f"{saved[key]!r:.100}, this run's is {fresh[key]!r:.100}")
        step = epoch * self.steps_per_epoch
        if saved["last_epoch"] != step or saved["_step_count"] != step + 1:
            raise ValueError(f"the saved scheduler is at step {saved['last_epoch']!r}, but {epoch} epochs of "
                             f"{self.steps_per_epoch} steps end at step {step}")

    @classmethod
    def from_checkpoint(cls, state, data=True):
        cfg = state.get("config")
        keys = ("model", "epochs", "batch_size", "lr", "seed")
        if not isinstance(cfg, dict) or any(k not in cfg for k in keys):
            raise ValueError(f"{cls.name} checkpoint: config must be a dict with entries {', '.join(keys)}, got "
                             f"{cfg!r:.200}")
        recipe = cls.__new__(cls)
        recipe.extra = state.get("extra", {})
        recipe.restore_extra(recipe.extra)
        Recipe.__init__(recipe, cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["seed"], cfg["model"], data=data)
        recipe.model.load_state_dict(state["model"])
        recipe.model.eval()
        return recipe

    def restore_extra(self, extra):
        pass

    def check_model_config(self, config):
        """Raise ValueError unless `config` (from a checkpoint) is one this recipe's model can be built from (the
        keys and ranges of model_bounds) and of a sane size (model_size: about its parameter count)."""
        what = f"{self.name} checkpoint: model config"
        check_config(what, config, self.model_bounds)
        _check_size(what, self.model_size(config))

    def _extra(self, extra, *keys):
        if not isinstance(extra, dict) or any(k not in extra for k in keys):
            raise ValueError(f"{self.name} checkpoint: extra must be a dict with entries {', '.join(keys)}")
        return [extra[k] for k in keys]


# --------------------------------------------------------------------------------------------------- ViT
class VitRecipe(Recipe):
    """vit_tiny on the bundled MNIST subset (4,000 train / 1,000 test): random shifts of up to 2 pixels,
    label smoothing 0.1, AdamW (weight decay 0.05) with a one-cycle learning rate."""

    name = "vit"
    defaults = dict(epochs=40, batch_size=128, lr=2e-3, weight_decay=0.05, warmup=0.1, shift=2, smoothing=0.1)

    def load_data(self):
        from minitensor.data import MNIST

        train, test = MNIST(train=True), MNIST(train=False)
        norm = lambda d: ((d.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD)[:, None]  # noqa: E731
        self.x_train, self.y_train = norm(np.asarray(train.data)), np.asarray(train.targets)
        self.x_test, self.y_test = norm(np.asarray(test.data)), np.asarray(test.targets)
        s = self.defaults["shift"]
        # every image padded once; a shifted copy is a 28 x 28 window of it
        self._padded = np.pad(self.x_train, ((0, 0), (0, 0), (s, s), (s, s)),
                              constant_values=(0.0 - MNIST_MEAN) / MNIST_STD)
        self._windows = np.lib.stride_tricks.sliding_window_view(self._padded, (28, 28), axis=(2, 3))

    model_bounds = dict(image_size=range(1, 1025), patch_size=range(1, 1025), in_channels=range(1, 65),
                        num_classes=range(1, 100_001), dim=range(1, 8193), depth=range(1, 129), heads=range(1, 1025),
                        mlp_dim=range(1, 65_537), dropout=float)

    @staticmethod
    def model_size(c):
        d, patches = c["dim"], (c["image_size"] // c["patch_size"]) ** 2
        return (c["in_channels"] * c["patch_size"] ** 2 * d + (patches + 2) * d
                + _encoder_layers(c["depth"], d, c["mlp_dim"]) + d * c["num_classes"])

    def build_model(self, config):
        return ViT(**config) if config else vit_tiny()

    def num_train(self):
        return len(self.y_train)

    def train_batches(self, rng):
        s = self.defaults["shift"]
        order = rng.permutation(len(self.y_train))
        shifts = rng.integers(0, 2 * s + 1, size=(len(order), 2))
        return [(idx, shifts[i:i + len(idx)]) for i, idx in zip(range(0, len(order), self.batch_size),
                                                               _batches(order, self.batch_size))]

    def train_step(self, batch):
        idx, shift = batch
        x = mt.from_numpy(np.ascontiguousarray(self._windows[idx, 0, shift[:, 0], shift[:, 1]][:, None]))
        y = mt.from_numpy(self.y_train[idx])
        logits = self.net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.defaults["smoothing"])
        self.optimize(loss, len(idx))
        return loss.item(), int((logits.argmax(-1) == y).sum().item()), len(idx), len(idx)

    @mt.no_grad()
    def predict(self, images):
        """images: float array (N, 1, 28, 28) in [0, 1] -> (predicted classes (N,), probabilities (N, 10))."""
        x = mt.from_numpy(((np.asarray(images, dtype=np.float32) - MNIST_MEAN) / MNIST_STD))
        probs = F.softmax(self.model(x), dim=-1).numpy()
        return probs.argmax(-1), probs

    @mt.no_grad()
    def evaluate(self):
        correct, loss = 0, 0.0
        for i in range(0, len(self.y_test), 500):
            x, y = mt.from_numpy(self.x_test[i:i + 500]), mt.from_numpy(self.y_test[i:i + 500])
            logits = self.model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum().item())
        return dict(test_accuracy=correct / len(self.y_test), test_loss=loss / len(self.y_test))


# ----------------------------------------------------------------------------------------------- seq2seq
class Seq2SeqRecipe(Recipe):
    """Vietnamese -> English number words below 10^9 (20,000 training pairs, 2,000 held-out numbers), word
    tokens ("twenty-one" is one token), an LSTM encoder-decoder with dot attention, teacher forcing."""

    name = "seq2seq"
    defaults = dict(epochs=3, batch_size=64, lr=5e-3, weight_decay=0.0, warmup=0.1, clip=1.0, attention=True,
                    teacher_forcing=1.0, num_train=20000, num_test=2000)

    def __init__(self, *args, attention=None, **kwargs):
        self.attention = self.defaults["attention"] if attention is None else attention
        super().__init__(*args, **kwargs)

    def load_data(self):
        from minitensor.data import NumberWords
        from minitensor.data.vocab import Vocab

        d = self.defaults
        self.train_pairs = NumberWords("train", num_train=d["num_train"], num_test=d["num_test"]).pairs
        self.test_pairs = NumberWords("test", num_train=d["num_train"], num_test=d["num_test"]).pairs
        if "src_vocab" not in self.extra:
            self.src_vocab = Vocab.build(s for s, _ in self.train_pairs)
            self.tgt_vocab = Vocab.build(t for _, t in self.train_pairs)
            self.extra = dict(src_vocab=self.src_vocab.state_dict(), tgt_vocab=self.tgt_vocab.state_dict())

    def restore_extra(self, extra):
        from minitensor.data.vocab import Vocab

        src, tgt = self._extra(extra, "src_vocab", "tgt_vocab")
        self.src_vocab, self.tgt_vocab = Vocab.from_state_dict(src), Vocab.from_state_dict(tgt)

    model_bounds = dict(src_vocab_size=range(1, 1_000_001), tgt_vocab_size=range(1, 1_000_001),
                        emb_dim=range(1, 8193), hidden_size=range(1, 8193), num_layers=range(1, 65),
                        attention=(True, False), pad_id=range(0, 1_000_000), start_id=range(0, 1_000_000),
                        end_id=range(0, 1_000_000), dropout=float)

    @staticmethod
    def model_size(c):
        e, h, layers = c["emb_dim"], c["hidden_size"], c["num_layers"]
        lstm = 4 * h * (max(e, h) + h + 2) * layers  # each layer: input and hidden weights, two biases
        return (c["src_vocab_size"] + c["tgt_vocab_size"]) * e + 2 * lstm + 2 * h * h + (h + 1) * c["tgt_vocab_size"]

    def check_model_config(self, config):
        super().check_model_config(config)
        # the vocabularies saved with the model must index its embeddings exactly (a larger one would produce ids
        # out of the embedding's range)
        sizes = dict(src_vocab_size=len(self.src_vocab), tgt_vocab_size=len(self.tgt_vocab),
                     pad_id=self.tgt_vocab.pad_id, start_id=self.tgt_vocab.start_id, end_id=self.tgt_vocab.end_id)
        for key, value in sizes.items():
            if config[key] != value:
                raise ValueError(f"seq2seq checkpoint: model config {key} is {config[key]}, but its vocabulary "
                                 f"gives {value}")

    def build_model(self, config):
        if config:
            self.attention = config["attention"]
            return Seq2Seq(**config)
        v = self.tgt_vocab
        return Seq2Seq(len(self.src_vocab), len(v), emb_dim=64, hidden_size=128, attention=self.attention,
                       pad_id=v.pad_id, start_id=v.start_id, end_id=v.end_id)

    def num_train(self):
        return len(self.train_pairs)

    def encode_src(self, texts):
        from minitensor.data.vocab import pad_batch, word_tokenize

        return pad_batch([self.src_vocab.encode(word_tokenize(t)) for t in texts], self.src_vocab.pad_id)[0]

    def train_batches(self, rng):
        return _batches(rng.permutation(len(self.train_pairs)), self.batch_size)

    def train_step(self, idx):
        from minitensor.data.vocab import pad_batch, word_tokenize

        pairs = [self.train_pairs[i] for i in idx]
        src = self.encode_src([s for s, _ in pairs])
        tgt = pad_batch([self.tgt_vocab.encode(word_tokenize(t), add_start=True, add_end=True) for _, t in pairs],
                        self.tgt_vocab.pad_id)[0]
        logits = self.net(src, tgt, teacher_forcing=self.defaults["teacher_forcing"])
        target = tgt[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=self.tgt_vocab.pad_id)
        keep = target != self.tgt_vocab.pad_id
        tokens = int(keep.sum().item())
        self.optimize(loss, tokens)
        correct = int(((logits.argmax(-1) == target) & keep).sum().item())
        return loss.item(), correct, tokens, len(idx)  # token accuracy

    def translate(self, texts, beam_size=1):
        _check_texts("translate", texts)
        out = []
        if beam_size > 1:
            for t in texts:
                ids = self.model.beam_search(self.encode_src([t])[0], beam_size=beam_size)
                out.append(" ".join(self.tgt_vocab.decode(ids)))
            return out
        for i in range(0, len(texts), 500):
            ids = self.model.greedy_decode(self.encode_src(texts[i:i + 500]))
            out += [" ".join(self.tgt_vocab.decode(row)) for row in ids.numpy()]
        return out

    def evaluate(self):
        predicted = self.translate([s for s, _ in self.test_pairs])
        exact = sum(p == t for p, (_, t) in zip(predicted, self.test_pairs))
        return dict(test_accuracy=exact / len(self.test_pairs))

    def config(self):
        return dict(super().config(), attention=self.attention)


# ----------------------------------------------------------------------------------------------- textcls
class TextClsRecipe(Recipe):
    """Which language is a number written in? Characters of the phrase (German and Dutch write numbers as one
    compound word, so characters, not words, carry the signal) -> a small Transformer encoder, mean pooling."""

    name = "textcls"
    defaults = dict(epochs=5, batch_size=64, lr=4e-3, weight_decay=0.01, warmup=0.1, num_train=2000, num_test=500)

    def load_data(self):
        from minitensor.data import LanguageOfNumberWords
        from minitensor.data.vocab import Vocab, char_tokenize

        d = self.defaults
        train = LanguageOfNumberWords("train", num_train=d["num_train"], num_test=d["num_test"])
        test = LanguageOfNumberWords("test", num_train=d["num_train"], num_test=d["num_test"])
        self.classes = train.classes
        self.train_samples, self.test_samples = train.samples, test.samples
        if "vocab" not in self.extra:
            self.vocab = Vocab.build((t for t, _ in self.train_samples), tokenizer=char_tokenize)
            self.extra = dict(vocab=self.vocab.state_dict(), classes=list(self.classes))

    def restore_extra(self, extra):
        from minitensor.data.vocab import Vocab

        vocab, classes = self._extra(extra, "vocab", "classes")
        self.vocab, self.classes = Vocab.from_state_dict(vocab), [str(c) for c in classes]

    model_bounds = dict(vocab_size=range(1, 1_000_001), num_classes=range(1, 100_001), dim=range(1, 8193),
                        depth=range(1, 129), heads=range(1, 1025), mlp_dim=range(1, 65_537), dropout=float,
                        max_len=range(1, 1_000_001), pad_id=range(0, 1_000_000), pooling=("mean", "cls"),
                        norm_first=(True, False))

    @staticmethod
    def model_size(c):
        d = c["dim"]  # the embedding, the positional table (a buffer), the encoder and the head
        return ((c["vocab_size"] + c["max_len"] + 2) * d + _encoder_layers(c["depth"], d, c["mlp_dim"])
                + (d + 1) * c["num_classes"])

    def check_model_config(self, config):
        super().check_model_config(config)
        sizes = dict(vocab_size=len(self.vocab), num_classes=len(self.classes), pad_id=self.vocab.pad_id)
        for key, value in sizes.items():
            if config[key] != value:
                raise ValueError(f"textcls checkpoint: model config {key} is {config[key]}, but its vocabulary and "
                                 f"classes give {value}")

    def build_model(self, config):
        if config:
            return TransformerClassifier(**config)
        return TransformerClassifier(len(self.vocab), len(self.classes), dim=64, depth=2, heads=4, mlp_dim=128,
                                     dropout=0.0, max_len=256, pad_id=self.vocab.pad_id)

    def num_train(self):
        return len(self.train_samples)

    def encode(self, texts):
        from minitensor.data.vocab import char_tokenize, pad_batch

        max_len = self.model.config["max_len"]
        return pad_batch([self.vocab.encode(char_tokenize(t))[:max_len] for t in texts], self.vocab.pad_id)[0]

    def train_batches(self, rng):
        """Shuffled, then bucketed: within each run of 20 batches the phrases are sorted by length, so a batch
        holds phrases of similar length and little padding; the batches are then shuffled."""
        n = len(self.train_samples)
        order = rng.permutation(n)
        chunk = 20 * self.batch_size
        lengths = np.array([len(t) for t, _ in self.train_samples])
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(order, -(-n // chunk))])
        batches = _batches(order, self.batch_size)
        return [batches[i] for i in rng.permutation(len(batches))]

    def train_step(self, idx):
        samples = [self.train_samples[i] for i in idx]
        x = self.encode([t for t, _ in samples])
        y = mt.tensor([label for _, label in samples], dtype=mt.int64)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.optimize(loss, len(idx))
        return loss.item(), int((logits.argmax(-1) == y).sum().item()), len(idx), len(idx)

    @mt.no_grad()
    def classify(self, texts):
        """texts -> (predicted class names, probabilities (N, classes))."""
        _check_texts("classify", texts)
        probs = []
        order = np.argsort([len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), 500):
            chunk = [texts[j] for j in order[i:i + 500]]
            probs.append(F.softmax(self.model(self.encode(chunk)), dim=-1).numpy())
        p = np.empty((len(texts), len(self.classes)), dtype=np.float32)
        p[order] = np.concatenate(probs)
        return [self.classes[k] for k in p.argmax(-1)], p

    def evaluate(self):
        names, _ = self.classify([t for t, _ in self.test_samples])
        correct = sum(n == self.classes[y] for n, (_, y) in zip(names, self.test_samples))
        return dict(test_accuracy=correct / len(self.test_samples))


RECIPES = {r.name: r for r in (VitRecipe, Seq2SeqRecipe, TextClsRecipe)}
