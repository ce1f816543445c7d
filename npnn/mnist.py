"""python -m npnn.mnist: the wide and deep MNIST exercise, watched in TensorBoard.

--model mlp (the course's lab 10-5): 784-512-512-512-512-10, ReLU, Xavier init, dropout
(keep 0.7) while training, Adam 1e-3, batch 100, 15 epochs.
--model cnn (lab 11): conv 3x3x32 + ReLU + maxpool 2, conv 3x3x64 + ReLU + maxpool 2,
dropout (keep 0.7), dense to 10.

TensorBoard: each run in its own directory under --logdir (default logs/mnist), named after
the model and the flags that differ from the defaults (mlp, cnn_lr_0.01). It holds train/loss
every --log-every steps, test/accuracy and test/loss each epoch, histograms of every layer's
weight and bias each epoch, the traced graph (one name scope per layer), the image grids
test_digits and misclassified (predicted and true labels in their descriptions), and hparams
with the final accuracy. All x axes are the global step (batches trained so far).

--distributed (under mpiexec): data-parallel over the job's processes. Each process trains on
its share of every global --batch-size batch, gradients are averaged with one allreduce per
step; rank 0 alone writes the run, checkpoints and progress (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import posixpath
import sys
import time
from pathlib import Path

import numpy as np

import npnn
from npnn import cli, distributed, init, nn, optim
from npnn import functional as F
from npnn.datasets import mnist as datasets_mnist
from npnn.datasets.mnist import DataError, MissingDataError, load_mnist
from npnn.tensor import Tensor

DROP = 0.3  # the course's keep_prob 0.7
GRID = 16  # digits per image grid (two rows of 8)


class MLP(nn.Module):
    """Lab 10-5: Linear+ReLU+Dropout four times, then Linear to 10 logits; scopes Layer1..Layer5."""

    def __init__(self, sizes=(784, 512, 512, 512, 512, 10), drop: float = DROP):
        super().__init__()
        self.drop = drop
        self.scopes = []  # (scope name, layer): the graph's boxes and the histograms' tags
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
            with npnn.name_scope(f"Layer{i}"):  # parameters named "Layer1/weight"
                layer = nn.Linear(a, b)
            init.xavier_uniform(layer.weight)
            init.zeros(layer.bias)
            setattr(self, f"layer{i}", layer)
            self.scopes.append((f"Layer{i}", layer))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.scopes)
        for i, (scope, layer) in enumerate(self.scopes, 1):
            with npnn.name_scope(scope):
                x = layer(x)
                if i < last:
                    x = F.dropout(npnn.relu(x), self.drop, self.training)
        return x


class CNN(nn.Module):
    """Lab 11: two conv(3x3, same padding)+ReLU+maxpool(2) blocks, dropout, dense to 10."""

    def __init__(self, drop: float = DROP):
        super().__init__()
        self.drop = drop
        with npnn.name_scope("Conv1"):
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        with npnn.name_scope("Conv2"):
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        with npnn.name_scope("Dense"):
            self.dense = nn.Linear(64 * 7 * 7, 10)
        self.scopes = [("Conv1", self.conv1), ("Conv2", self.conv2), ("Dense", self.dense)]
        for _, layer in self.scopes:
            init.xavier_uniform(layer.weight)
            init.zeros(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        for scope, conv in self.scopes[:2]:
            with npnn.name_scope(scope):
                x = F.max_pool2d(npnn.relu(conv(x)), 2)
        with npnn.name_scope("Dense"):
            x = F.dropout(x.reshape(x.shape[0], -1), self.drop, self.training)
            return self.dense(x)


MODELS = {"mlp": MLP, "cnn": CNN}


class CheckpointError(Exception):
    """A --resume file that cannot be read or does not fit the model or the flags."""


class DisagreementError(Exception):
    """Ranks of one --distributed job started with different arguments or data."""


RUN_FLAGS = ("batch_size", "lr", "seed", "limit", "test_limit")  # what a resumed run keeps: its curves' meaning


def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000, progress: bool = False
) -> tuple[float, float, np.ndarray]:
    """(accuracy, mean cross-entropy, predicted labels) on a whole set, in eval mode."""
    from tqdm import tqdm

    model.eval()
    preds = np.empty(len(labels), dtype=np.int64)
    total = 0.0
    bar = tqdm(
        total=len(labels),
        desc="evaluating",
        unit="img",
        disable=not progress,
        leave=False,
        mininterval=0.5,
        file=sys.stderr,
    )
    with npnn.no_grad(), bar:
        for i in range(0, len(labels), batch_size):
            logits = model(Tensor(images[i : i + batch_size]))
            y = labels[i : i + batch_size]
            total += F.cross_entropy(logits, y).item() * len(y)
            preds[i : i + batch_size] = logits.data.argmax(axis=1)
            bar.update(len(y))
    model.train()
    return float(np.mean(preds == labels)), total / len(labels), preds


# -- checkpoints ----------------------------------------------------------------------------


def save_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, meta: dict) -> None:
    """Model, optimizer state and meta (epoch, step, RNG) in one .npz, written atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    state = opt.state_dict()
    steps = {}
    for i, s in state["state"].items():
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                arrays[f"optim/{i}/{k}"] = v
            else:
                steps[f"{i}/{k}"] = v
    meta = dict(
        meta, optim_groups=state["param_groups"], optim_scalars=steps, rng=npnn.random.generator().bit_generator.state
    )
    arrays["meta"] = np.array(json.dumps(meta))
    nn._save_npz(path, arrays)


_META_MAX_CHARS = 1 << 20  # the JSON metadata is a few kB; a header may not claim gigabytes


def load_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, model_name: str) -> dict:
    """Restore model, optimizer and npnn's RNG from save_checkpoint's file; return its meta.

    Everything is checked before anything is assigned; CheckpointError names the file and the problem.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    own = dict(model.named_parameters())

    def check(name: str, shape: tuple, dtype: np.dtype):
        if name == "meta":
            if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _META_MAX_CHARS:
                return (
                    f"'meta' is {dtype} of shape {shape}, "
                    f"expected a JSON string of at most {_META_MAX_CHARS} characters"
                )
            return None
        kind, _, key = name.partition("/")
        if kind == "model" and key in own:
            return nn._check_array(name, shape, dtype, own[key].data.shape)
        index = key.split("/")[0]
        if kind == "optim" and key.count("/") == 1 and index.isdigit() and int(index) < len(params):
            return nn._check_array(name, shape, dtype, params[int(index)].data.shape)
        return f"unexpected key {name!r}"

    try:
        meta = nn.read_npz(path, check, required=["meta"], only={"meta"})["meta"]  # first: which model
        meta = _check_meta(json.loads(str(meta)), model_name)
        arrays = nn.read_npz(path, check, required=["meta", *(f"model/{k}" for k in own)])
        state = {}
        for k, v in arrays.items():
            if k.startswith("optim/"):
                _, i, name = k.split("/")
                state.setdefault(int(i), {})[name] = v
        for key, v in meta["optim_scalars"].items():
            i, _, name = key.partition("/")
            if not (i.isdigit() and name):
                raise ValueError(f"meta: optim_scalars key {key!r}, expected '<index>/<name>'")
            state.setdefault(int(i), {})[name] = v
        try:
            type(npnn.random.generator().bit_generator)().state = meta["rng"]  # checked on a scratch generator
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(
                f"meta: 'rng' is not a {type(npnn.random.generator().bit_generator).__name__} state ({e})"
            ) from None
        opt.load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
    except OSError as e:
        raise CheckpointError(f"--resume {path}: cannot read: {e.strerror or e}") from None
    except (ValueError, TypeError, KeyError) as e:
        text = str(e) if str(e).startswith(f"{path}: ") else f"{path}: {e}"
        raise CheckpointError(f"--resume {text}") from None
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    npnn.random.generator().bit_generator.state = meta["rng"]
    return meta


def _check_meta(meta, model_name: str) -> dict:
    """The checkpoint's metadata, its fields' types checked (ValueError saying which is wrong)."""
    fields = {"model": str, "epoch": int, "step": int, "optim_groups": list, "optim_scalars": dict, "rng": dict}
    if not isinstance(meta, dict):
        raise ValueError(f"meta: expected a JSON object, got {type(meta).__name__}")
    for key, kind in fields.items():
        if key not in meta:
            raise ValueError(f"meta: missing key {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"meta: {key!r} is {meta[key]!r}, expected {kind.__name__}")
    if meta["model"] != model_name:
        raise ValueError(f"holds a {meta['model']} model, but --model is {model_name}")
    for key in ("epoch", "step"):
        if meta[key] < 0:
            raise ValueError(f"meta: {key!r} is {meta[key]}, expected an int >= 0")
    if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in meta["optim_groups"]):
        raise ValueError("meta: 'optim_groups' must be a list of objects with a 'params' list")
    batch = meta.get("batch", 0)  # batches done in the epoch: an interrupted run's checkpoint
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise ValueError(f"meta: 'batch' is {batch!r}, expected an int >= 0")
    run = meta.get("run_dir")  # only its last name is used: the run goes under --logdir
    if run is not None and not (isinstance(run, str) and _run_name_ok(posixpath.basename(run.rstrip("/")))):
        raise ValueError(f"meta: 'run_dir' is {run!r}, expected a path ending in a run's name")
    flags = meta.get("flags", {})
    if not isinstance(flags, dict) or any(
        k not in (*RUN_FLAGS, "epochs", "log_every") or not isinstance(v, (int, float)) or isinstance(v, bool)
        for k, v in flags.items()
    ):
        raise ValueError(f"meta: 'flags' is {flags!r}, expected numbers for {', '.join(RUN_FLAGS)}")
    return meta


def _run_name_ok(name: str) -> bool:
    """Whether name can be a run directory's name: not empty, '.', '..', and no NUL or separator."""
    return name not in ("", ".", "..") and not any(c in name for c in "\0/\\")


# -- TensorBoard ----------------------------------------------------------------------------


def log_parameters(writer, model: nn.Module, step: int) -> None:
    """Histograms of every layer's weight and bias, tagged <scope>/weight and <scope>/bias."""
    for scope, layer in model.scopes:
        writer.add_histogram(f"{scope}/weight", layer.weight.data, step)
        writer.add_histogram(f"{scope}/bias", layer.bias.data, step)


def log_digits(writer, images: np.ndarray, labels: np.ndarray, preds: np.ndarray, step: int) -> None:
    """Grids test_digits (the first test digits) and misclassified, the labels in the descriptions.

    The tags stay the same from run to run, so TensorBoard shows every run's grid on one card.
    """
    from tbwriter import summary

    def grid(tag: str, idx: np.ndarray, description: str) -> None:
        if len(idx):
            s = summary.described_images(tag, images[idx].reshape(-1, 1, 28, 28), description)
            writer._get_file_writer().add_summary(s, step)

    def row(values) -> str:
        return " ".join(map(str, values))

    first = np.arange(min(GRID, len(labels)))
    grid("test_digits", first, f"Predicted: {row(preds[first])}\n\nTrue: {row(labels[first])}")
    wrong = np.flatnonzero(preds != labels)[:GRID]
    grid("misclassified", wrong, f"Predicted: {row(preds[wrong])}\n\nTrue: {row(labels[wrong])}")


def log_graph(writer, model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """The traced graph of one training forward pass and its loss (scope Cost)."""

    def step(x, y):
        logits = model(x)
        with npnn.name_scope("Cost"):
            return F.cross_entropy(logits, y)

    state = npnn.random.generator().bit_generator.state
    writer.add_graph(npnn.trace(step, Tensor(x, name="x"), Tensor(y, name="y")))
    npnn.random.generator().bit_generator.state = state  # tracing's dropout draws change nothing


class _NoWriter:
    """What ranks other than 0 write to: nothing (every SummaryWriter call does nothing)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


# -- the program ----------------------------------------------------------------------------


def run_name(args: argparse.Namespace) -> str:
    """The run directory's name: the model, then the flags that differ from the defaults (cnn_ep_1_limit_500)."""
    name = args.model
    for flag, short in (("epochs", "ep"), ("lr", "lr"), ("batch_size", "bs"), ("seed", "seed"), ("limit", "limit")):
        value = getattr(args, flag)
        if value != build_parser().get_default(flag):
            name += f"_{short}_{value:g}"
    return name


def run_dir(args: argparse.Namespace, meta: dict | None) -> str:
    """This run's directory under --logdir: named as the checkpoint's when resuming, else a new one."""
    name = os.path.join(args.logdir, run_name(args))
    if meta is not None:  # the command line's --logdir wins over the directory the checkpoint names
        recorded = meta.get("run_dir")
        return os.path.join(args.logdir, posixpath.basename(recorded.rstrip("/"))) if recorded else name
    fresh = cli.new_run_dir(name)
    if fresh != name:
        print(f"{name} already holds a run: this one goes to {fresh}")
    return fresh


def data_problem(path: str) -> str | None:
    """Why --data cannot be used (missing, a file, or the files one folder down), or None."""
    if not os.path.exists(path):
        return f"{path}: no such directory"
    if not os.path.isdir(path):
        return f"{path} is a file, not a directory"
    if any(datasets_mnist.find_file(Path(path), f) for f in datasets_mnist.FILES):
        return None
    for sub in sorted(Path(path).glob("*/")) + sorted(Path(path).glob("*/*/")):
        if all(datasets_mnist.find_file(sub, f) for f in datasets_mnist.FILES):
            return f"{path} holds no MNIST files, but {sub} does: use --data {sub}"
    return None  # an empty directory the user named: the files are downloaded into it


def check_paths(parser: cli.Parser, args: argparse.Namespace) -> None:
    """Every path flag checked before any work: exit 2 with one line naming flag and value."""
    checks = (
        ("--logdir", args.logdir, cli.directory_problem),
        ("--save", args.save, cli.file_problem),
        ("--data", args.data, data_problem),
    )
    for flag, value, problem in checks:
        message = value is not None and problem(value)
        if message:
            parser.fail(flag, message)


def build_parser() -> argparse.ArgumentParser:
    """The command line of python -m npnn.mnist."""
    p = cli.Parser(
        prog="python -m npnn.mnist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=sorted(MODELS), default="mlp", help="network to train (default: mlp)")
    p.add_argument(
        "--epochs", type=cli.integer(1), default=15, help="epochs to train, in total when resuming (default: 15)"
    )
    p.add_argument("--batch-size", type=cli.integer(1), default=100, help="training batch size (default: 100)")
    p.add_argument("--lr", type=cli.positive_number, default=1e-3, help="Adam learning rate (default: 0.001)")
    p.add_argument("--seed", type=cli.integer(0), default=0, help="seed of init, dropout and shuffling (default: 0)")
    p.add_argument("--logdir", default="logs/mnist", help="where the runs go, one directory each (default: logs/mnist)")
    p.add_argument(
        "--data",
        default=None,
        help="an existing directory holding the four MNIST files (default $NPNN_DATA, else "
        "~/.cache/npnn/mnist); missing files are downloaded there",
    )
    p.add_argument(
        "--save",
        default=None,
        metavar="PATH",
        help="write a checkpoint .npz after each epoch and at Ctrl-C (into an existing directory)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="PATH",
        help="continue from a checkpoint written by --save, with the run's flags unless given",
    )
    p.add_argument(
        "--log-every", type=cli.integer(1), default=10, help="steps between train/loss scalars (default: 10)"
    )
    p.add_argument("--limit", type=cli.integer(0), default=0, help="train on the first N training images only (0: all)")
    p.add_argument(
        "--test-limit", type=cli.integer(0), default=0, help="evaluate on the first N test images only (0: all)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes of mpiexec (needs mpi4py); --batch-size is the global batch",
    )
    p.add_argument(
        "--rank-scalars",
        action="store_true",
        help="with --distributed: each rank logs its throughput under <logdir>/rank_N",
    )
    return p


def restore_flags(args: argparse.Namespace, meta: dict, path: str) -> None:
    """Take the run's flags from the checkpoint where the command line leaves them out.

    A given flag that differs is a CheckpointError (a resumed run keeps what its curves mean),
    as is an --epochs the checkpoint already reached: nothing to train, and the run is left as it is.
    args.given (main() sets it) names the flags typed; without it every flag counts as typed.
    """
    given = getattr(args, "given", None)
    flags = meta.get("flags", {})
    for key in RUN_FLAGS:
        if key not in flags:  # a checkpoint from before flags were recorded
            continue
        if given is None or key in given:
            if getattr(args, key) != flags[key]:
                flag = "--" + key.replace("_", "-")
                raise CheckpointError(
                    f"--resume {path}: the run was trained with {flag} {flags[key]}, not {getattr(args, key)}; "
                    f"leave {flag} out to continue it"
                )
        else:
            setattr(args, key, flags[key])
    for key in ("epochs", "log_every"):  # the run's unless typed: these may change on resume
        if key in flags and given is not None and key not in given:
            setattr(args, key, flags[key])
    if meta["epoch"] >= args.epochs:
        raise CheckpointError(
            f"--resume {path}: the checkpoint has {meta['epoch']} epochs done, so --epochs {args.epochs} trains "
            f"nothing (give --epochs {meta['epoch'] + 1} or more to continue); the run is left as it is"
        )


def agree(what: str, values: dict) -> None:
    """Every rank's values equal rank 0's, or DisagreementError naming the first difference."""
    difference = distributed.first_difference(values)
    if difference:
        raise DisagreementError(f"the ranks disagree on {what}: {difference}")


def digest(*arrays: np.ndarray) -> str:
    """A hash of the arrays' shapes and bytes: ranks compare data without sending it."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def train(args: argparse.Namespace) -> dict:
    """Train as the parsed arguments say; return the final metrics.

    Ctrl-C raises cli.Interrupted saying which run stopped where: the first one at the next step
    boundary, after saving a checkpoint there when --save is given (not under --distributed,
    where the ranks would stop at different steps); a second one at once.
    """
    where = {"run": None}  # what the interrupt message names, filled in as the run starts
    try:
        return _train(args, where)
    except KeyboardInterrupt:
        if where["run"] is None:
            raise cli.Interrupted("before training started; nothing was written") from None
        raise cli.Interrupted(f"run {where['run']} stopped mid-step, without a checkpoint of it") from None


def _train(args: argparse.Namespace, where: dict) -> dict:
    """train()'s work; where["run"] is set to the run directory once it is chosen."""
    from tqdm import tqdm
    from tbwriter import SummaryWriter

    if args.distributed:
        distributed.init()
        skip = ("given", "data", "no_progress")  # the data is compared by its hash below
        agree("the arguments", {"--" + k.replace("_", "-"): v for k, v in vars(args).items() if k not in skip})
    lead = distributed.rank() == 0  # the one process that logs, saves and prints
    npnn.manual_seed(args.seed)
    model = MODELS[args.model]()
    opt = optim.Adam(model.parameters(), lr=args.lr)
    epoch, step, first_batch = 0, 0, 0
    if args.resume and lead:  # before the data: a bad checkpoint is reported before any long work
        meta = load_checkpoint(args.resume, model, opt, args.model)
        restore_flags(args, meta, args.resume)
        epoch, step, first_batch = meta["epoch"], meta["step"], meta.get("batch", 0)
    if args.distributed:  # every rank starts from rank 0's parameters, moments, step and flags
        distributed.broadcast_parameters(model.parameters())
        distributed.broadcast_optimizer_state(opt)
        epoch, step, first_batch = distributed.broadcast((epoch, step, first_batch))
        vars(args).update(distributed.broadcast({k: getattr(args, k) for k in (*RUN_FLAGS, "epochs", "log_every")}))
    data = load_mnist(args.data, flatten=args.model == "mlp", progress=lead and not args.no_progress)
    x_train, y_train = data.train_images, data.train_labels
    x_test, y_test = data.test_images, data.test_labels
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    if args.test_limit:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    if args.distributed:
        agree("the data", {"training set": digest(x_train, y_train), "test set": digest(x_test, y_test)})
    logdir = run_dir(args, meta if args.resume else None) if lead else None
    if args.distributed:  # rank 0 chose it: the other ranks' throughput goes into the same run
        logdir = distributed.broadcast(logdir)
    where["run"] = logdir
    # From here the first Ctrl-C stops the loop at the next step boundary (cli.StopOnInterrupt).
    with cli.StopOnInterrupt(active=not args.distributed) as stop:
        # On resume, purge_step drops whatever a crashed run logged after the checkpoint (the
        # checkpoint's own step keeps its epoch summaries: they were written before it).
        writer = SummaryWriter(logdir, purge_step=step + 1 if args.resume else None) if lead else _NoWriter()
        rank_writer = (
            SummaryWriter(os.path.join(logdir, f"rank_{distributed.rank()}"))
            if args.distributed and args.rank_scalars
            else _NoWriter()
        )
        params = list(model.parameters())
        n, bs = len(y_train), args.batch_size
        batches = math.ceil(n / bs)
        hparams = {
            "model": args.model,
            "epochs": args.epochs,
            "batch_size": bs,
            "lr": args.lr,
            "seed": args.seed,
            "keep_prob": 1 - DROP,
            "train_images": n,
        }

        def save(batch: int) -> None:
            flags = {k: getattr(args, k) for k in (*RUN_FLAGS, "epochs", "log_every")}
            meta = {
                "model": args.model,
                "epoch": epoch,
                "step": step,
                "batch": batch,
                "run_dir": logdir,
                "flags": flags,
            }
            save_checkpoint(args.save, model, opt, meta)

        try:
            if step == 0:
                log_graph(writer, model, x_train[:bs], y_train[:bs])
                log_parameters(writer, model, 0)
            while epoch < args.epochs:
                # The shuffle depends on (seed, epoch) only, so a resumed run sees the same batches.
                order = np.random.default_rng([args.seed, epoch]).permutation(n)
                if args.distributed:  # dropout masks differ per rank, and repeat on resume
                    npnn.manual_seed(distributed.rank_seed(args.seed, epoch))
                bar = tqdm(
                    total=n,
                    initial=min(n, first_batch * bs),
                    desc=f"epoch {epoch + 1}/{args.epochs}",
                    unit="img",
                    disable=args.no_progress or not lead,
                    mininterval=0.5,
                    leave=True,
                    file=sys.stderr,
                )
                start = time.perf_counter()
                images = reduce_time = 0.0
                trained = n - min(n, first_batch * bs)  # a resumed epoch trains only its rest
                for b in range(first_batch, batches):
                    if stop.requested:  # between steps: the model, Adam and the RNG are one whole state
                        bar.close()
                        if args.save:
                            save(b)
                        at = f"run {logdir} stopped at step {step} (epoch {epoch + 1}, batch {b}/{batches})"
                        raise cli.Interrupted(
                            f"{at}; checkpoint saved: --resume {args.save} continues it"
                            if args.save
                            else f"{at}; no checkpoint (--save PATH keeps one to --resume from)"
                        )
                    idx = order[b * bs : (b + 1) * bs]
                    share = distributed.shard(idx) if args.distributed else idx
                    opt.zero_grad()
                    if len(share):  # a global batch smaller than the job leaves some ranks idle
                        loss = F.cross_entropy(model(Tensor(x_train[share])), y_train[share])
                        loss.backward()
                    if args.distributed:
                        t = time.perf_counter()
                        distributed.allreduce_gradients(params, weight=len(share) / len(idx))
                        reduce_time += time.perf_counter() - t
                        images += len(share)
                    opt.step()
                    step += 1
                    if step % args.log_every == 0:
                        value = (
                            loss.item()
                            if not args.distributed
                            else distributed.allreduce(loss.item() * len(share) / len(idx) if len(share) else 0.0)
                        )
                        writer.add_scalar("train/loss", value, step)
                        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                    bar.update(len(idx))
                bar.close()
                epoch, first_batch = epoch + 1, 0
                seconds = time.perf_counter() - start
                rank_writer.add_scalar("throughput/images_per_second", images / seconds, step)
                rank_writer.add_scalar("throughput/allreduce_ms_per_step", 1e3 * reduce_time / batches, step)
                accuracy, test_loss, preds = evaluate(model, x_test, y_test, progress=lead and not args.no_progress)
                writer.add_scalar("test/accuracy", accuracy, step)
                writer.add_scalar("test/loss", test_loss, step)
                log_parameters(writer, model, step)
                writer.flush()
                if lead:
                    print(
                        f"epoch {epoch}/{args.epochs}: test accuracy {accuracy:.4f}, test loss {test_loss:.4f}, "
                        f"{trained / seconds:.0f} images/s",
                        flush=True,
                    )
                if args.save and lead:
                    save(0)
            if lead:  # the grids go through the run's file writer, which only rank 0 has
                log_digits(writer, x_test, y_test, preds, step)
            metrics = {"hparam/accuracy": accuracy, "hparam/test_loss": test_loss}
            writer.add_hparams(hparams, metrics, global_step=step)
        finally:
            writer.close()
            rank_writer.close()
    return {"accuracy": accuracy, "test_loss": test_loss, "step": step, "logdir": logdir}


def main(argv=None) -> int:
    """Entry point: parse flags, train, print the final accuracy; data problems exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = cli.given_flags(parser, argv)
    check_paths(parser, args)
    try:
        result = train(args)
    except DisagreementError as e:  # every rank found it: each ends by itself, rank 0 says why
        if distributed.rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except (MissingDataError, DataError, CheckpointError, distributed.MPIUnavailableError) as e:
        if args.distributed and distributed.size() > 1:
            distributed.abort(f"error: {e}")  # the other ranks may be waiting for this one
        print(f"error: {e}", file=sys.stderr)
        return 1
    if distributed.rank() != 0:
        return 0
    print(
        f"final test accuracy {result['accuracy']:.4f} after {result['step']} steps; "
        f"in {result['logdir']}; TensorBoard: tensorboard --logdir {args.logdir}"
    )
    return 0


def command(argv=None) -> int:
    """python -m npnn.mnist as a program: main(), with Ctrl-C as one line and exit 130."""
    return cli.run_main("python -m npnn.mnist", main, argv)


if __name__ == "__main__":
    sys.exit(command())
