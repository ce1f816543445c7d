"""A fixed training step recorded once and replayed: `step = plan.compile(loss_fn, optimizer)`.

`step(*inputs)` does what the eager lines
    loss = loss_fn(*inputs); optimizer.zero_grad(); loss.backward(); optimizer.step()
do, with the same results bit for bit, but the forward is run as a recorded list of NumPy
calls writing into the arrays the first (eager) call allocated, with no Tensor created: the
first call records loss_fn's ops through the tape's tracing hook, later calls replay them.
backward runs over the recorded tape in the engine's order (same VJPs, same sums; no heap),
and the optimizer's step as usual. After the first replayed step, when the optimizer is
Adam updating one group of small parameters as one flat buffer (optim.Adam._step_fused), the
step up to Adam's fused update becomes one list of NumPy calls (see Plan._program): the VJPs
write with out= into a buffer per node, the parameters' gradients go straight into Adam's flat
gradient buffer, and the parameters' .grad arrays, like the loss, are the same arrays at every
replay.

Summaries loss_fn records (npnn.summary) read the replayed tensors: merge_all() between
`loss = step.forward_backward(*inputs)` and `step.update()` (the two halves of a call) sees
this step's values before the update, as the eager loop that merges before optimizer.step().

Replaying is refused, and the step runs eagerly, when it could be wrong:
- an input's shape or dtype differs from the recorded call (or their number): eager for that
  call (a changed shape stays eager; the plan is kept for calls that match again);
- loss_fn read a tensor's value into Python while recorded (bool(), item(), float(), int(),
  numpy(), np.asarray(): the control flow may depend on data), made a Tensor() or used a
  constant tensor other than its inputs and parameters (in an op or a summary), was given an
  input that requires grad (its gradient belongs to the caller's tensor), used an op the
  plan has no kernel for (MatMul of matrices, AddV2, Sub, Mul, division by a number, Neg, Log,
  Exp, Sigmoid, comparisons, Cast and the full float32 Mean have one), recorded a summary of a
  non-Tensor value, or did anything else the tape's tracing hook sees (backward, the
  optimizer's step): eager from then on;
- an op took a non-Tensor operand (a Python number; Cast's dtype, Mean's axis) that the calling
  code does not spell out: a replay never runs loss_fn's Python, so only values every call
  passes alike are baked: a literal at an operator (`t * 0.5`, `1 - t`, `t > 0.5`), literals
  and modules' attributes as a cast's or a mean's arguments (`t.astype(np.float32)`,
  `t.float()`, `t.mean()`), read from the caller's bytecode at record time
  (_written_at_the_call). A number from a variable, a dict, an attribute or a call refuses the
  plan, naming the op and the value: eager from then on.
Not seen, because a replay runs no Python of loss_fn: control flow on Python values (which
ops, tensors and literals the recorded call used is fixed: `t * (2 if a else 3)` is one
operator per branch from Python 3.12 on), module attributes rebound later, and
`.data` read directly (control flow must not depend on it).
The returned loss Tensor is the same object at every replay (its data updated in place).
"""

from __future__ import annotations

import bisect
import dis
import functools
import sys
import types

import numpy as np

from npnn import ops as _ops
from npnn import optim as _optim
from npnn import tensor as _t
from npnn.tensor import Tensor

__all__ = ["compile", "Plan"]


class _Unsupported(Exception):
    """Something in the recorded step cannot be replayed safely."""


class _Recorder:
    """Stands in for npnn.trace's graph while loss_fn runs once: collects (op, inputs, output)
    and the summaries recorded (op, the tensor it reads, its collections)."""

    def __init__(self):
        self.ops = []
        self.summaries = []
        self.unseen = []  # the non-Tensor operands not spelled out at the call, as "Op took value"

    def record(self, op: str, inputs, out: Tensor) -> None:
        self.ops.append((op, tuple(inputs), out))
        # A replay never runs loss_fn's Python again: a number, dtype or axis it read from a
        # variable would be baked in unseen, so only the ones the calling code spells out replay.
        if op in _BY_CALL:
            if not _written_at_the_call(op):
                self.unseen.append(f"{op} took its arguments")
            return
        for x in inputs:
            if not isinstance(x, Tensor) and not _written_at_the_call(op, x):
                self.unseen.append(f"{op} took {x!r}")

    def record_summary(self, op, collections: tuple) -> None:
        if not isinstance(op.tensor, Tensor):
            raise _Unsupported(f"summary {op.tag!r} of a value that is not a Tensor (it is not replayed)")
        self.summaries.append((op, op.tensor, collections))

    def record_backward(self, root):
        raise _Unsupported("backward() inside loss_fn (the plan runs backward itself)")

    def record_step(self, optimizer):
        raise _Unsupported("optimizer.step() inside loss_fn (the plan runs the step itself)")

    def __getattr__(self, name):  # graph helpers look for more: not replayable
        raise _Unsupported(f"loss_fn used {name} while recorded")


# Tensor methods that hand data to Python (control flow may follow) or make tensors the
# recording cannot see being computed: any of them while recording refuses the plan.
_READS = tuple(
    n
    for n in ("__bool__", "item", "__float__", "__int__", "__index__", "numpy", "tolist", "__array__", "__init__")
    if n in vars(Tensor)
)


_UFUNCS = {
    "AddV2": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Neg": np.negative,
    "Log": np.log,
    "Exp": np.exp,
}
_COMPARISONS = {
    "Less": np.less,
    "LessEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterEqual": np.greater_equal,
    "Equal": np.equal,
    "NotEqual": np.not_equal,
}
_NUMBERS = (int, float)


def _kernel(op: str, inputs: tuple, out: Tensor) -> list:
    """Calls (f, args) replaying one recorded op into out.data, bit-identical to the eager op
    (npnn/ops.py), reading the arrays its inputs hold now."""
    dst = out.data
    if type(dst) is not np.ndarray or not dst.flags.c_contiguous:
        raise _Unsupported(f"{op}: its output is not a contiguous array")
    if op == "MatMul" and out._backward is _ops._matmul_vjp:  # 2-D: ndarray.dot
        a, b = inputs
        return [(a.data.dot, (b.data, dst))]
    if op == "Sigmoid" and out._backward is _ops._sigmoid_vjp:
        (x,), d = inputs, out._ctx.denominator  # as ops.sigmoid: u = exp(min(x, 88)); d = u + 1; out = u / d
        return [
            (functools.partial(np.minimum, out=dst), (x.data, _ops._EXP_MAX)),
            (np.exp, (dst, dst)),
            (np.add, (dst, _ops._ONE, d)),
            (np.divide, (dst, d, dst)),
        ]  # minimum: out= only by keyword
    if (
        op == "Mean"
        and (out._backward is _ops._mean_vjp or out._backward is None)
        and dst.ndim == 0
        and dst.dtype == np.float32
        and inputs[0].data.dtype == np.float32
    ):
        (x,) = inputs
        exact = float(_ops._scalar(1 / x.data.size, dst.dtype))  # as ops.mean's full float32 mean

        def scale():
            dst[()] = dst.item() * exact

        return [(np.add.reduce, (x.data, None, None, dst)), (scale, ())]
    if op == "Cast":  # astype's cast loop, into the recorded array
        return [(functools.partial(np.copyto, casting="unsafe"), (dst, inputs[0].data))]
    if op in _COMPARISONS:  # as ops._compare: a Python number as a 0-d array of a's dtype
        a, b = inputs
        if type(b) in _NUMBERS:
            b = _ops._scalar(b, a.data.dtype)
        elif isinstance(b, Tensor):
            b = b.data
        else:
            raise _Unsupported(f"{op} with a {type(b).__name__} operand (a constant the plan cannot follow)")
        return [(_COMPARISONS[op], (a.data, b, dst))]
    f = _UFUNCS.get(op)
    if f is None or (op == "RealDiv" and out._backward is not _ops._div_scalar_vjp):  # others' VJPs keep arrays
        raise _Unsupported(f"no replay kernel for op {op!r}")
    if f.nin == 1:
        return [(f, (inputs[0].data, dst))]
    a, b = inputs
    if out._backward is _ops._scale_vjp or out._backward is _ops._div_scalar_vjp:
        k = out._ctx.factor if out._backward is _ops._scale_vjp else out._ctx.divisor
        return [(f, (a.data, k, dst))]  # Mul or RealDiv by a number: the number eager uses
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return [(f, (a.data, b.data, dst))]
    if isinstance(a, Tensor):
        return [(f, (a.data, _ops._scalar(b, dst.dtype), dst))]
    return [(f, (_ops._scalar(a, dst.dtype), b.data, dst))]


# What each instruction pops and pushes, for the few that build an operator's operands in
# straight-line code; anything else stops the walk (_producer), so the operand counts as unseen.
_STACK = {
    **dict.fromkeys(("NOP", "RESUME", "EXTENDED_ARG", "CACHE", "PRECALL", "KW_NAMES", "NOT_TAKEN"), (0, 0)),
    **dict.fromkeys(("LOAD_CONST", "LOAD_SMALL_INT", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE", "PUSH_NULL"), (0, 1)),
    **dict.fromkeys(("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"), (0, 1)),
    **dict.fromkeys(("LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"), (0, 2)),
    **dict.fromkeys(("UNARY_NEGATIVE", "UNARY_INVERT", "UNARY_NOT", "UNARY_POSITIVE"), (1, 1)),
    **dict.fromkeys(("BINARY_SUBSCR", "BINARY_OP", "COMPARE_OP"), (2, 1)),
    "LOAD_METHOD": (1, 2),
}
_LITERALS = ("LOAD_CONST", "LOAD_SMALL_INT")
# t * 0.5, 1 - t, t > 0.5: the number is one of two operands (3.10 has an opcode per operator).
_OPERATORS = ("BINARY_OP", "COMPARE_OP", "BINARY_ADD", "BINARY_SUBTRACT", "BINARY_MULTIPLY", "BINARY_TRUE_DIVIDE")
_STACK.update(dict.fromkeys(_OPERATORS, (2, 1)))
# Calls: what they pop besides the arguments (callable, self or NULL; CALL_KW's keyword names).
_CALLS = {"CALL": 2, "CALL_KW": 3, "CALL_METHOD": 2, "CALL_FUNCTION": 1, "CALL_FUNCTION_KW": 2}
_BY_CALL = ("Cast", "Mean")  # ops whose other arguments (dtype; axis, keepdims) are not among their inputs
_OP_FILES = frozenset((_ops.__file__, _t.__file__))  # frames of an op and of the tape, not the caller's


def _stack(ins: dis.Instruction):
    """(pops, pushes) of an instruction, or None for one the walk does not follow."""
    name, arg = ins.opname, ins.arg or 0
    if name == "LOAD_GLOBAL":  # 3.11 on: bit 0 pushes a NULL for a call as well
        return 0, 1 + (arg & 1 if sys.version_info >= (3, 11) else 0)
    if name == "LOAD_ATTR":  # 3.12 on: bit 0 is a method load (two slots)
        return 1, 1 + (arg & 1 if sys.version_info >= (3, 12) else 0)
    if name in _CALLS:
        return arg + _CALLS[name], 1
    return _STACK.get(name)


@functools.lru_cache(maxsize=256)
def _instructions(code: types.CodeType) -> tuple:
    """code's instructions and their offsets."""
    instrs = list(dis.get_instructions(code))
    return instrs, [ins.offset for ins in instrs]


def _producer(instrs: list, i: int, depth: int):
    """Index of the instruction that pushed the stack slot `depth` (0: the top) instrs[i] reads,
    walking back through straight-line code; None where that cannot be told for sure."""
    while i > 0:
        if getattr(instrs[i], "is_jump_target", True):  # reached from elsewhere too
            return None
        i -= 1
        effect = _stack(instrs[i])
        if effect is None:
            return None
        pops, pushes = effect
        if depth < pushes:
            return i
        depth += pops - pushes
    return None


def _spelled(instrs: list, j, frame: types.FrameType) -> tuple:
    """(True, value) if instruction j pushes a literal, a module named by a global, or a module's
    attribute (np.float32, math.pi), else (False, None)."""
    ins = None if j is None else instrs[j]
    if ins is None or _stack(ins) not in ((0, 1), (1, 1)):
        return False, None
    if ins.opname in _LITERALS:
        return True, ins.argval
    if ins.opname == "LOAD_GLOBAL":
        module = frame.f_globals.get(ins.argval)
        return isinstance(module, types.ModuleType), module
    if ins.opname == "LOAD_ATTR":
        ok, module = _spelled(instrs, _producer(instrs, j, 0), frame)
        if ok and isinstance(module, types.ModuleType):
            return True, getattr(module, ins.argval, None)
    return False, None


def _callee(instrs: list, j, frame: types.FrameType):
    """The function instruction j loads for a call if it is a global or a module's attribute
    (npnn.ops.mean), else None."""
    ins = None if j is None else instrs[j]
    if ins is not None and ins.opname == "LOAD_GLOBAL":
        return frame.f_globals.get(ins.argval)
    if ins is not None and ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
        ok, module = _spelled(instrs, _producer(instrs, j, 0), frame)
        if ok and isinstance(module, types.ModuleType):
            return getattr(module, ins.argval, None)
    return None


def _call_spelled(instrs: list, i: int, frame: types.FrameType) -> bool:
    """Whether the call at instrs[i] passes only spelled-out values besides the tensor: every
    argument of a method (t.mean(), t.astype(np.float32), t.float()), all but the first of a
    plain function named by a global or a module's attribute (npnn.ops.mean(t)), called
    without keywords."""
    ins = instrs[i]
    if ins.opname not in _CALLS:
        return False
    names, argc = int(ins.opname.endswith("_KW")), ins.arg or 0  # the keyword names' tuple on top
    keywords = names or any(x.opname == "KW_NAMES" for x in instrs[max(0, i - 2) : i])
    # The slot below the arguments holds the callable, or self or NULL beside it: loaded together.
    function = isinstance(_callee(instrs, _producer(instrs, i, names + argc), frame), types.FunctionType)
    first = names + argc - 1  # the first argument's slot
    return all(
        _spelled(instrs, _producer(instrs, i, d), frame)[0] for d in range(names, first + (keywords or not function))
    )


def _written_at_the_call(op: str, value=None) -> bool:
    """Whether what an op took besides tensors while recorded is spelled out in the code that
    called the op, so that every call passes the same: a number that is a literal at an operator
    (t * 0.5, 1 - t, t > 0.5), or, for Cast and Mean (value None), only literals and modules'
    attributes as arguments (t.astype(np.float32), t.float(), t.mean()). Read from the caller's
    bytecode; anything else (a variable, a dict, an attribute, a call's result) could change
    between calls unseen. Which branch ran is not seen (control flow: see the module doc)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _OP_FILES:
        frame = frame.f_back
    if frame is None:
        return False
    instrs, offsets = _instructions(frame.f_code)
    i = bisect.bisect_right(offsets, frame.f_lasti) - 1  # f_lasti may point into the instruction's caches
    if op in _BY_CALL:
        return _call_spelled(instrs, i, frame)
    if instrs[i].opname not in _OPERATORS:
        return False
    for depth in (0, 1):  # the other operand is the Tensor, never a literal
        ok, written = _spelled(instrs, _producer(instrs, i, depth), frame)
        if ok and type(written) is type(value) and written == value:
            return True
    return False


class Plan:
    """A training step: the first call runs eagerly and records, later calls replay (see the module doc)."""

    def __init__(self, loss_fn, optimizer):
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.signature = None  # ((shape, dtype, requires_grad) of each input)
        self.placeholders = None  # the Tensors loss_fn saw while recorded; replay copies inputs into their arrays
        self.ops = None  # (op, inputs, output) as recorded
        self.leaves = None  # the tensors the ops read that are neither inputs nor op outputs (parameters)
        self.kernels = None  # the forward as (NumPy function, arguments) calls
        self.bound = None  # (leaf, the array the calls read from it)
        self.loss = None
        self.schedule = None  # (index, node, vjp, parents as indices / leaves / None), newest first
        self.ones = None  # d loss / d loss
        self.refused = None  # why the plan runs eagerly for good, once known
        self.program = None  # the step up to the update as NumPy calls into buffers (see _program)
        self.tried = False
        self.unbuffered = None  # why the step replays without the buffered backward, if it does
        self.rebind = None  # binds the summaries loss_fn recorded to their replayed tensors again
        self.fused_update = None  # with the program: Adam's update of the gradients it left
        self.pending = None  # what update() is to do: None (nothing), "program", "replayed" or "eager"

    def __call__(self, *inputs) -> Tensor:
        """One step: the loss (before the update), gradients in .grad, parameters updated."""
        loss = self.forward_backward(*inputs)
        self.update()
        return loss

    def forward_backward(self, *inputs) -> Tensor:
        """The step up to the update: the loss, gradients in .grad, summaries recorded by loss_fn
        bound to this step's values; the parameters are not updated yet (see update())."""
        if self.program is not None and self._matches(inputs):
            self._replay(inputs, self.program)
            self.pending = "program"
            return self.loss
        signature = _signature(inputs)
        if self.refused is None and self.kernels is not None:
            self._check_leaves()
        if self.refused is None and self.kernels is not None and signature == self.signature:
            self._replay(inputs, self.kernels)
            loss = self.loss
        elif self.refused is None and self.kernels is None and signature is not None:
            loss = self._record(inputs, signature)
        else:
            loss = self.loss_fn(*inputs)
        self.optimizer.zero_grad()
        if loss is self.loss:
            self._backward()
            self.pending = "replayed"
        else:
            loss.backward()
            self.pending = "eager"
        return loss

    def _replay(self, inputs: tuple, calls: list) -> None:
        """Copy the inputs into the plan's arrays, run the recorded calls, and bind loss_fn's
        summaries to the replayed tensors (eager calls in between may have bound others)."""
        for p, x in zip(self.placeholders, inputs):
            p.data[...] = x.data
        for f, args in calls:
            f(*args)
        if self.rebind is not None:
            self.rebind()

    def update(self) -> None:
        """The optimizer's step from the gradients the last forward_backward() left (once per call)."""
        pending, self.pending = self.pending, None
        if pending is None:
            raise RuntimeError("update(): no gradients to apply; call forward_backward(*inputs) first, once per update")
        if pending == "program":
            self.fused_update()
            return
        self.optimizer.step()
        if pending == "replayed" and self.program is None and not self.tried:
            self.tried = True
            try:
                self.program = self._program()
            except _Unsupported as e:
                self.unbuffered = str(e)

    def _matches(self, inputs: tuple) -> bool:
        """The program's guard: inputs of the recorded number, shapes, dtypes and requires_grad,
        and every leaf the calls read (the parameters) still holding the array they were baked with."""
        if len(inputs) != len(self.signature):
            return False
        for x, (shape, dtype, grad) in zip(inputs, self.signature):
            if type(x) is not Tensor and not isinstance(x, Tensor):
                return False
            d = x.data
            if d.shape != shape or d.dtype != dtype or x.requires_grad != grad:
                return False
        for t, a, _, _, grad in self.bound:
            if t.data is not a or t.requires_grad is not grad:
                return False
        return len(self.optimizer.param_groups) == 1  # a group added since: zero_grad and step all of them

    def _bake(self) -> None:
        """The forward's calls with the arrays they read and write; a new program after this step."""
        self.kernels = [c for op, ins, out in self.ops for c in _kernel(op, ins, out)]
        self.bound = [(t, t.data, t.data.shape, t.data.dtype, t.requires_grad) for t in self.leaves]
        self.program, self.tried = None, False

    def _check_leaves(self) -> None:
        """A parameter given a new array of the same shape and dtype: bake again. Another shape,
        dtype or requires_grad changes the recorded graph itself: eager from then on."""
        for t, a, shape, dtype, grad in self.bound:
            if t.data is a and t.requires_grad is grad:
                continue
            if t.data.shape != shape or t.data.dtype != dtype or t.requires_grad is not grad:
                self.refused = "a parameter's shape, dtype or requires_grad changed since the step was recorded"
                self.program = None
                return
            self._bake()
            return

    def _program(self) -> list:
        """The step up to the update as one list of NumPy calls into preallocated buffers: the
        forward kernels, the backward's VJPs writing with out= (shares summed in the engine's
        order), the leaves' .grad set to their buffers; self.fused_update is Adam's update of them.
        Built after the first replayable step, when the optimizer's own buffers exist;
        _Unsupported keeps the step-by-step replay."""
        opt = self.optimizer
        if type(opt) is not _optim.Adam or len(opt.param_groups) != 1:
            raise _Unsupported("the fused replay needs one torch-style Adam parameter group")
        group = opt.param_groups[0]
        fused = opt._plans.get(id(group))
        if fused is None or fused.state is not opt.state or len(fused.entries) != len(group["params"]):
            raise _Unsupported("Adam does not update this group as one flat buffer")
        slots = {id(e.param): e.g for e in fused.entries}  # each leaf's .grad: its slice of Adam's flat g
        backward, reached = _backward_kernels(self.schedule, self.ones, slots)
        if len(reached) != len(slots):
            raise _Unsupported("some optimizer parameters get no gradient from the loss")
        grads = [(e.param, e.g) for e in fused.entries]
        step_fused = opt._step_fused

        def set_grads():
            for p, g in grads:
                p.grad = g

        def fused_update():
            if not step_fused(group):  # the group changed (state loaded, options, shapes): eager Adam
                opt.step()

        self.fused_update = fused_update
        return [*self.kernels, *backward, (set_grads, ())]

    def _backward(self) -> None:
        """loss.backward() over the recorded tape in its fixed order: the engine's VJP calls and
        gradient sums, in the same order (so bit-identical), without its heap and bookkeeping.
        Sums are always fresh arrays and leaves get copies: no share is written into in place."""
        grads = [None] * len(self.schedule)
        grads[0] = self.ones
        for i, node, vjp, targets in self.schedule:
            g = grads[i]
            if g is None:
                continue
            for target, pg in zip(targets, vjp(g, node)):
                if pg is None or target is None:
                    continue
                if type(target) is int:  # an op output: sum its shares in arrival order
                    cur = grads[target]
                    grads[target] = pg if cur is None else cur + pg
                elif target.grad is None:  # a leaf: a copy, since shares may be aliased
                    target.grad = np.array(pg, dtype=target.data.dtype)
                else:
                    target.grad += pg

    @property
    def replaying(self) -> bool:
        """Whether calls with the recorded input shapes replay (False: eager for good, see refused)."""
        return self.refused is None and self.kernels is not None

    def _record(self, inputs: tuple, signature: tuple) -> Tensor:
        """Run loss_fn once eagerly through placeholders, recording its ops; build the kernels."""
        if any(x.requires_grad for x in inputs):  # its gradient must reach the caller's tensor, summed as eager sums it
            self.refused = "an input requires grad (the plan's gradients go to parameters only)"
            return self.loss_fn(*inputs)
        placeholders = [Tensor(x.data, name=x.name) for x in inputs]
        recorder = _Recorder()
        reads = []
        saved = {name: getattr(Tensor, name) for name in _READS}

        def reading(name):
            original = saved[name]

            def read(self, *args, **kwargs):
                reads.append(name)
                return original(self, *args, **kwargs)

            return read

        if _t._tracer is not None:
            raise RuntimeError("plan: cannot record inside npnn.trace")
        _t._tracer = recorder
        for name in _READS:
            setattr(Tensor, name, reading(name))
        try:
            loss = self.loss_fn(*placeholders)
        except _Unsupported as e:
            self.refused = str(e)
            loss = None
        finally:
            _t._tracer = None
            for name, f in saved.items():
                setattr(Tensor, name, f)
        if loss is None:  # recording stopped halfway: this step runs eagerly from its start
            return self.loss_fn(*inputs)
        if reads:
            self.refused = f"loss_fn read tensor values into Python ({', '.join(sorted(set(reads)))}) while recorded"
            return loss
        if recorder.unseen:
            self.refused = (
                f"{', '.join(recorder.unseen[:3])} from a variable, not spelled out at the call: a replay does not "
                "run loss_fn, so a new value would go unseen; write it as a literal or pass it as an input Tensor"
            )
            return loss
        made = {id(out) for _, _, out in recorder.ops}
        if not isinstance(loss, Tensor) or id(loss) not in made or not loss.requires_grad:
            self.refused = "loss_fn must return a Tensor it computed from the parameters"
            return loss
        known = {id(p) for p in placeholders}
        for _, ins, _ in recorder.ops:
            for x in ins:
                if isinstance(x, Tensor) and id(x) not in made and id(x) not in known and not x.requires_grad:
                    self.refused = (
                        "loss_fn used a constant tensor that is not one of its inputs "
                        "(it could change between steps unseen): pass it as an input"
                    )
                    return loss
        for op, t, _ in recorder.summaries:
            if id(t) not in made and id(t) not in known and not t.requires_grad:
                self.refused = f"summary {op.tag!r} reads a constant tensor made outside loss_fn: pass it as an input"
                return loss
        self.ops = recorder.ops
        if recorder.summaries:
            from npnn.summary import bind  # imported already: loss_fn recorded summaries

            self.rebind = functools.partial(bind, recorder.summaries)  # as the eager call records them
        self.leaves = list(
            {
                id(x): x
                for _, ins, _ in self.ops
                for x in ins
                if isinstance(x, Tensor) and id(x) not in made and id(x) not in known
            }.values()
        )
        for p in placeholders:  # the plan's own input arrays: later inputs are copied in
            p.data = np.array(p.data, order="C")
        try:
            self._bake()
        except _Unsupported as e:
            self.refused = str(e)
            self.kernels = None
            return loss
        # Nodes made after the loss (for summaries) are not behind it: backward never sees them.
        order = [out for _, _, out in recorder.ops if out.requires_grad and out._seq <= loss._seq]
        if any(t.data.dtype != loss.data.dtype for t in order) or loss.data.size != 1:
            self.refused = "the replayed backward needs one float dtype throughout and a one-element loss"
            return loss
        order.sort(key=lambda t: -t._seq)  # what the engine's heap pops: newest node first
        index = {id(t): i for i, t in enumerate(order)}
        if any(p.requires_grad and p._backward is not None and id(p) not in index for t in order for p in t._parents):
            self.refused = "loss_fn used a tensor computed outside it with a graph behind it: pass its leaves"
            return loss
        self.schedule = [
            (i, t, t._backward, [None if not p.requires_grad else index.get(id(p), p) for p in t._parents])
            for i, t in enumerate(order)
        ]
        self.ones = np.ones(loss.data.shape, loss.data.dtype)
        self.placeholders, self.signature, self.loss = placeholders, signature, loss
        return loss


def _share_writer(node: Tensor, k: int, g: np.ndarray, dst: np.ndarray) -> list:
    """Calls (f, args) writing node's VJP share for its input k into dst as the eager VJP computes
    it (npnn/ops.py; same ufuncs on the same operands, so the same bits), given node's gradient g."""
    vjp, parents = node._backward, node._parents
    x = parents[k]
    if any(a.dtype != dst.dtype for a in (g, x.data)) or dst.shape != x.data.shape:
        raise _Unsupported("the buffered backward needs one float dtype throughout")
    if vjp is _ops._pass or vjp is _ops._pass2 or (vjp is _ops._pass_negate and k == 0):
        return [(np.positive, (g, dst))]  # the share is g itself: a copy
    if vjp is _ops._negate or vjp is _ops._pass_negate:
        return [(np.negative, (g, dst))]
    if vjp is _ops._add_vjp:  # unbroadcast(g, x.shape)
        if g.shape == dst.shape:
            return [(np.positive, (g, dst))]
        if g.shape[1:] == dst.shape:
            return [(np.add.reduce, (g, 0, None, dst))]
        raise _Unsupported("AddV2 broadcasting beyond a leading axis")
    if vjp is _ops._mul_vjp:  # g * the other input
        return [(np.multiply, (g, parents[1 - k].data, dst))]
    if vjp is _ops._scale_vjp:
        return [(np.multiply, (g, node._ctx.factor, dst))]
    if vjp is _ops._div_scalar_vjp:
        return [(np.divide, (g, node._ctx.divisor, dst))]
    if vjp is _ops._matmul_vjp:
        a, b = parents
        return [(g.dot, (b.data.T, dst))] if k == 0 else [(a.data.T.dot, (g, dst))]
    if vjp is _ops._log_vjp:
        return [(np.divide, (g, x.data, dst))]
    if vjp is _ops._exp_vjp:
        return [(np.multiply, (g, node.data, dst))]
    if vjp is _ops._sigmoid_vjp:
        return [(np.multiply, (g, node.data, dst)), (np.divide, (dst, node._ctx.denominator, dst))]
    if vjp is _ops._mean_vjp:  # _spread: g reshaped to the kept shape, times 1/n, broadcast
        return [(np.multiply, (g.reshape(node._ctx.kept), node._ctx.inv_n, dst))]
    raise _Unsupported(f"no buffered VJP for {getattr(vjp, '__name__', vjp)}")


def _passes_g(node: Tensor, k: int, g: np.ndarray, shape: tuple) -> bool:
    """Whether node's VJP hands input k the gradient g itself (the engine's share is g)."""
    vjp = node._backward
    return g.shape == shape and (
        vjp is _ops._pass or vjp is _ops._pass2 or vjp is _ops._add_vjp or (vjp is _ops._pass_negate and k == 0)
    )


def _edges(schedule: list):
    """(node index, node, input k, target) of every share the engine computes, in its order."""
    reached = {0}
    for i, node, _, targets in schedule:
        if i not in reached:  # no share reached it: the engine skips it
            continue
        for k, target in enumerate(targets):
            if target is not None:
                if type(target) is int:
                    reached.add(target)
                yield i, node, k, target


def _backward_kernels(schedule: list, ones: np.ndarray, leaf_grads: dict) -> tuple:
    """(calls, leaves reached): the recorded backward as NumPy calls into one buffer per node
    and the given leaf buffers (id(leaf) -> array). Same VJPs in the same order as the engine;
    a first share is written straight into its node's or leaf's buffer, each later one into a
    scratch array then added in (first + second, ..., the engine's order of sums). A node whose
    only share is its consumer's gradient itself shares that buffer (nothing writes it later)."""
    arrivals: dict = {}
    for _, _, _, target in _edges(schedule):
        key = target if type(target) is int else id(target)
        arrivals[key] = arrivals.get(key, 0) + 1
    buffers = [ones] + [None] * (len(schedule) - 1)
    seen, calls = set(), []
    for i, node, k, target in _edges(schedule):
        g = buffers[i]
        if type(target) is int:
            key, shape = target, schedule[target][1].data.shape
            if arrivals[key] == 1 and _passes_g(node, k, g, shape):
                buffers[target] = g
                seen.add(key)
                continue
            if buffers[target] is None:
                buffers[target] = np.empty_like(schedule[target][1].data)
            dst = buffers[target]
        else:
            key = id(target)
            if key not in leaf_grads:
                raise _Unsupported("a leaf that is not an optimizer parameter needs a gradient")
            dst = leaf_grads[key]
        if key not in seen:
            seen.add(key)
            calls += _share_writer(node, k, g, dst)
        else:
            scratch = np.empty_like(dst)
            calls += _share_writer(node, k, g, scratch)
            calls.append((np.add, (dst, scratch, dst)))
    return calls, {id(t) for _, _, _, t in _edges(schedule) if type(t) is not int}


def _signature(inputs: tuple):
    """(shape, dtype, requires_grad) of each input Tensor; None if one is not a Tensor."""
    if not all(isinstance(x, Tensor) for x in inputs):
        return None
    return tuple((x.data.shape, x.data.dtype, x.requires_grad) for x in inputs)


def compile(loss_fn, optimizer) -> Plan:
    """A Plan running loss_fn, zero_grad, backward and optimizer.step as one recorded step."""
    return Plan(loss_fn, optimizer)
