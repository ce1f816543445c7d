"""A real client: Hugging Face's Trainer with TensorBoardCallback(tb_writer=tbwriter.SummaryWriter(...)).

The Trainer trains a tiny regression to the end; a real `tensorboard --logdir` then serves the
loss and learning rate it logged at every logging step, and the training arguments it wrote as text.
"""

import json

import pytest
from conftest import requires
from tbserver import tensorboard

import tbwriter

torch = requires("torch", "peers", "the Trainer needs torch")
transformers = requires("transformers", "peers", "Hugging Face's Trainer is the client under test")
requires("accelerate", "peers", "the Trainer needs accelerate")

STEPS, EVERY = 20, 5


class Regression(torch.nn.Module):
    """y = 3x - 1 with a Linear layer; returns the loss the way Trainer expects."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, x, labels=None):
        out = self.linear(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def test_trainer_with_tensorboard_callback_logs_through_tbwriter(tmp_path):
    from transformers import Trainer, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    torch.manual_seed(0)
    data = [{"x": torch.tensor([i / 16]), "labels": torch.tensor([3 * i / 16 - 1])} for i in range(32)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        logging_steps=EVERY,
        per_device_train_batch_size=8,
        learning_rate=0.1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    writer = tbwriter.SummaryWriter(tmp_path / "tb")
    trainer = Trainer(
        model=Regression(), args=args, train_dataset=data, callbacks=[TensorBoardCallback(tb_writer=writer)]
    )
    result = trainer.train()
    assert result.global_step == STEPS
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == list(range(EVERY, STEPS + 1, EVERY))

    with tensorboard(tmp_path / "tb", load_fast=True) as tb:
        tags = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/tags"),
            lambda t: {"train/loss", "train/learning_rate"} <= set(t.get(".", {})),
        )
        points = tb.json("/data/plugin/scalars/scalars", run=".", tag="train/loss")
        assert [s for _, s, _ in points] == [h["step"] for h in logged]
        assert [v for _, _, v in points] == pytest.approx([h["loss"] for h in logged], rel=1e-6)
        assert points[-1][2] < points[0][2]  # it learned
        assert "train/train_runtime" in tags["."]
        (text,) = tb.json("/data/plugin/text/text", run=".", tag="args/text_summary")
        assert json.dumps(args.learning_rate) in text["text"] and "max_steps" in text["text"]
