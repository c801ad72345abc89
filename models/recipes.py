"""Training recipes: the data, model, loss, optimizer and evaluation of each `python -m minitensor train` task.

Each recipe exposes what minitensor.training.fit drives: `train_batches(rng)`, `train_step(batch)`, `evaluate()`,
`state()` / `load_state(state)`, `config()` and `current_lr()`; `from_checkpoint(state)` rebuilds a trained
model for evaluation and inference. Built only on minitensor's public API.
"""
import numpy as np

import minitensor as mt
from minitensor import nn, optim
from minitensor.nn import functional as F

from .seq2seq import Seq2Seq
from .transformer import TransformerClassifier
from .vit import ViT, vit_tiny

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"{self.name}: epochs and batch size must be at least 1 and lr positive, got epochs "
                             f"{self.epochs}, batch size {self.batch_size}, lr {self.lr}")
        self.extra = getattr(self, "extra", {})
        if data:
            self.load_data()
        mt.manual_seed(seed)
        self.model = self.build_model(model_config)
        self.ddp = None  # the DistributedDataParallel wrapper of a distributed run (see distribute)
        self.optimizer = self.scheduler = None
        if data:
            self.setup_optimizer(-(-self.num_train() // self.batch_size))

    def config(self):
        return dict(model=self.model.config, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)

    def setup_optimizer(self, steps_per_epoch):
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

    def load_state(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @classmethod
    def from_checkpoint(cls, state, data=True):
        cfg = state["config"]
        recipe = cls.__new__(cls)
        recipe.extra = state.get("extra", {})
        recipe.restore_extra(recipe.extra)
        Recipe.__init__(recipe, cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["seed"], cfg["model"], data=data)
        recipe.model.load_state_dict(state["model"])
        recipe.model.eval()
        return recipe

    def restore_extra(self, extra):
        pass


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

        self.src_vocab = Vocab.from_state_dict(extra["src_vocab"])
        self.tgt_vocab = Vocab.from_state_dict(extra["tgt_vocab"])

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

        self.vocab = Vocab.from_state_dict(extra["vocab"])
        self.classes = list(extra["classes"])

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
