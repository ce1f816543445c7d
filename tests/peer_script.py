"""One training-style logging script, run unchanged against any SummaryWriter class (tbwriter or a peer)."""

import numpy as np

STEPS = range(0, 30, 3)
IMAGE = np.linspace(0, 1, 3 * 6 * 5, dtype=np.float32).reshape(3, 6, 5)  # CHW in [0, 1]
IMAGES = np.arange(4 * 3 * 4 * 4, dtype=np.uint8).reshape(4, 3, 4, 4)  # NCHW uint8
LABELS = np.array([0, 1, 1, 0, 1, 0, 1, 1])
PREDICTIONS = np.array([0.1, 0.8, 0.6, 0.3, 0.9, 0.45, 0.55, 0.7])
VERTS = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=np.float32)
FACES = np.array([[[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]], dtype=np.int32)
EMB = np.random.default_rng(3).standard_normal((9, 4)).astype(np.float32)
SPRITES = np.random.default_rng(4).random((9, 3, 5, 5)).astype(np.float32)
CLIPS = np.random.default_rng(5).integers(0, 256, (2, 3, 3, 8, 8), dtype=np.uint8)  # N T C H W
RATE = 8000
WAVE = (0.5 * np.sin(np.arange(400) * 2 * np.pi * 440 / RATE)).astype(np.float32)


def run(SummaryWriter, logdir, skip=()) -> None:
    """Log one of everything the three writers share, as a user script would; `skip` names what a peer cannot do."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    writer = SummaryWriter(logdir)
    writer.add_graph(model, torch.zeros(3, 4))
    for step in STEPS:
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalar("lr", torch.tensor(0.1 * 0.9**step), step)
        writer.add_scalars("acc", {"train": step / 30, "val": step / 40}, step)
        writer.add_histogram("weights", model[0].weight.detach() * (step + 1), step)
    writer.add_image("image", torch.from_numpy(IMAGE), 1)
    writer.add_images("images", IMAGES, 2)
    writer.add_text("note", "**bold** words", 3)
    writer.add_pr_curve("pr", LABELS, PREDICTIONS, 4, num_thresholds=11)
    writer.add_custom_scalars_multilinechart(["loss", "lr"], category="c", title="both")
    writer.add_mesh("mesh", torch.from_numpy(VERTS), faces=torch.from_numpy(FACES), global_step=5)
    writer.add_embedding(
        torch.from_numpy(EMB),
        metadata=[f"w{i}" for i in range(9)],
        label_img=torch.from_numpy(SPRITES),
        global_step=6,
        tag="words",
    )
    fig = plt.figure(figsize=(2, 2), dpi=30)
    plt.plot([0, 1, 2], [2, 0, 1])
    writer.add_figure("figure", fig, 7)
    writer.add_image_with_boxes("boxes", torch.zeros(3, 30, 40), torch.tensor([[3.0, 4.0, 25.0, 20.0]]), 8)
    if "video" not in skip:
        writer.add_video("clip", torch.from_numpy(CLIPS), 10, fps=5)
    if "audio" not in skip:
        writer.add_audio("sound", torch.from_numpy(WAVE), 9, sample_rate=RATE)
    writer.add_hparams({"lr": 0.1, "layers": 2, "opt": "sgd"}, {"hp/acc": 0.75})
    writer.close()
