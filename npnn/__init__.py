"""npnn: reverse-mode autodiff on NumPy with a PyTorch-like API."""
from npnn.tensor import Parameter, Tensor, enable_grad, is_grad_enabled, no_grad
from npnn.ops import (abs, clip, concatenate, exp, log, log_softmax, matmul, maximum, minimum,
                      relu, sigmoid, softmax, sqrt, stack, tanh, where)
from npnn.random import manual_seed
from npnn.graph import Graph, name_scope, trace
from npnn import functional
from npnn import init
from npnn import nn
from npnn import optim

