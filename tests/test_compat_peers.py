"""tbwriter against tensorboardX and torch.utils.tensorboard: one script, three writers, one real TensorBoard.

tests/peer_script.py logs one of everything the writers share; each writer runs it into its own
run directory; a `tensorboard --logdir` server reads all three and every test compares what it
serves for tbwriter with what it serves for a peer: tags, steps, values, decoded images and audio,
mesh data, the projector's tensors, the graph's nodes, hparams. The one intended layout difference
(hparams in the run itself, not in a new timestamped sub-run) and tensorboardX's add_scalars
sub-run names (<main>/<key> rather than torch's <main>_<key>) are mapped before comparing.
Also: every public method of each peer exists in tbwriter with the same parameters and defaults.
"""

import importlib.util
import inspect
import io
import wave

import numpy as np
import peer_script
import pytest
from conftest import requires
from tbserver import tensorboard

import tbwriter

requires("torch", "peers", "the peer script logs torch tensors and a torch model")
requires("tensorboardX", "peers", "tensorboardX is the peer compared with")
requires("matplotlib", "media", "the peer script logs a matplotlib figure")
PIL = requires("PIL.Image", "media", "images are decoded with Pillow")


def _peer_writers() -> dict:
    """The peers that are installed: name -> (SummaryWriter class, what its installation cannot log)."""
    peers = {}
    # Both peers' add_video encode with moviepy, which neither depends on: without it they log an
    # error and write nothing.
    no_video = () if importlib.util.find_spec("moviepy") else ("video",)
    if no_video:
        print("tensorboardX, torch: add_video not compared: they need the moviepy package, not installed")
    try:
        import tensorboardX

        # tensorboardX's add_audio imports soundfile, and only then: not a dependency of it.
        skip = no_video + (() if importlib.util.find_spec("soundfile") else ("audio",))
        if "audio" in skip:
            print("tensorboardX: add_audio not compared: it needs the soundfile package, not installed")
        peers["tensorboardX"] = (tensorboardX.SummaryWriter, skip)
    except ImportError as e:
        print(f"tensorboardX not compared: {e}")
    try:
        from torch.utils.tensorboard import SummaryWriter

        peers["torch"] = (SummaryWriter, no_video)
    except ImportError as e:
        print(f"torch.utils.tensorboard not compared: {e}")
    return peers


PEERS = _peer_writers()


def peer_param(name):
    reason = f"{name} is not installed (pip install -e '.[peers]'); nothing to compare against"
    return pytest.param(name, marks=pytest.mark.skipif(name not in PEERS, reason=reason), id=name)


BOTH = [peer_param("tensorboardX"), peer_param("torch")]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    peer_script.run(tbwriter.SummaryWriter, str(root / "tbwriter"))
    for name, (cls, skip) in PEERS.items():
        peer_script.run(cls, str(root / name), skip=skip)
    return root


@pytest.fixture(scope="module")
def tb(logdir):
    with tensorboard(logdir, load_fast=True) as server:
        want = {"tbwriter", *PEERS}
        server.wait_for(
            lambda: server.json("/data/plugin/scalars/tags"),
            lambda t: {r.split("/")[0] for r, tags in t.items() if "hp/acc" in tags} >= want,
        )
        yield server


def _canonical(run: str) -> str:
    """A peer's run name as tbwriter lays it out: hparams sub-run -> the run, tensorboardX's acc/train -> acc_train."""
    writer, _, rest = run.partition("/")
    if not rest or rest.replace(".", "").isdigit():  # the peers' timestamped hparams sub-run
        return writer
    return writer + "/" + rest.replace("/", "_")


def by_run(tags: dict, writer: str) -> dict:
    """{canonical sub-run ('' for the run): {tag: info}} of one writer, from a plugin's /tags answer."""
    out = {}
    for run, t in tags.items():
        canonical = _canonical(run)
        if canonical.split("/")[0] == writer:
            out.setdefault(canonical[len(writer) + 1 :], {}).update(t if isinstance(t, dict) else dict.fromkeys(t))
    return out


def runs_of(tags: dict, writer: str, canonical: str) -> list:
    """The served runs of writer that map to canonical ('' for the writer's run)."""
    return [r for r in tags if _canonical(r) == (writer + "/" + canonical).rstrip("/")]


PLUGINS = ("scalars", "histograms", "images", "text", "pr_curves", "mesh", "audio")


@pytest.mark.parametrize("peer", BOTH)
def test_same_runs_and_tags_in_every_plugin(tb, peer):
    for plugin in PLUGINS:
        tags = tb.json(f"/data/plugin/{plugin}/tags")
        ours, theirs = by_run(tags, "tbwriter"), by_run(tags, peer)
        if plugin == "audio" and "audio" in PEERS[peer][1]:
            print(f"{peer}: audio tags not compared (add_audio skipped, see above)")
            continue
        if plugin == "images" and "video" in PEERS[peer][1]:
            ours[""].pop("clip")
        assert {r: set(t) for r, t in ours.items()} == {r: set(t) for r, t in theirs.items()}, plugin


@pytest.mark.parametrize("peer", BOTH)
def test_same_scalar_steps_and_values(tb, peer):
    tags = tb.json("/data/plugin/scalars/tags")
    for sub, sub_tags in by_run(tags, "tbwriter").items():
        for tag in sub_tags:
            ours = [
                (s, v)
                for r in runs_of(tags, "tbwriter", sub)
                for _, s, v in tb.json("/data/plugin/scalars/scalars", run=r, tag=tag)
            ]
            theirs = [
                (s, v)
                for r in runs_of(tags, peer, sub)
                if tag in tags[r]
                for _, s, v in tb.json("/data/plugin/scalars/scalars", run=r, tag=tag)
            ]
            assert ours == theirs and ours, (sub, tag)


@pytest.mark.parametrize("peer", BOTH)
def test_same_histogram_distributions(tb, peer):
    for step_ours, step_theirs in zip(
        *(tb.json("/data/plugin/distributions/distributions", run=w, tag="weights") for w in ("tbwriter", peer))
    ):
        assert step_ours[1] == step_theirs[1]
        ours, theirs = np.array(step_ours[2]), np.array(step_theirs[2])  # [basis point, value] pairs
        np.testing.assert_allclose(ours, theirs, rtol=0.15, atol=1e-6)  # bucket edges differ by < one bucket


def image_of(tb, run, tag) -> tuple:
    (meta,) = tb.json("/data/plugin/images/images", run=run, tag=tag, sample=0)
    return meta["step"], np.asarray(
        PIL.open(io.BytesIO(tb.get("/data/plugin/images/individualImage?" + meta["query"]))).convert("RGB"), np.int32
    )


@pytest.mark.parametrize("peer", BOTH)
@pytest.mark.parametrize("tag", ["image", "images", "figure", "boxes"])
def test_same_images_decoded(tb, peer, tag):
    (step, ours), (step_theirs, theirs) = image_of(tb, "tbwriter", tag), image_of(tb, peer, tag)
    assert step == step_theirs and ours.shape == theirs.shape
    # Float images: tbwriter rounds x*255, the peers truncate it, so a pixel may differ by one.
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("peer", BOTH)
def test_same_text_pr_curve_and_custom_scalars(tb, peer):
    text = [tb.json("/data/plugin/text/text", run=w, tag="note/text_summary") for w in ("tbwriter", peer)]
    # The peers write a 1-element string vector, which TensorBoard renders as a one-cell table;
    # tbwriter writes a scalar string, as tf.summary.text does: the same text without the table.
    assert [(t["step"], t["text"]) for t in text[0]] == [(3, "<p><strong>bold</strong> words</p>")]
    assert [(t["step"], t["text"]) for t in text[1]] == [
        (3, "<table>\n<tbody>\n<tr>\n<td><p><strong>bold</strong> words</p></td>\n</tr>\n</tbody>\n</table>")
    ]
    pr = [tb.json("/data/plugin/pr_curves/pr_curves", run=w, tag="pr")[w] for w in ("tbwriter", peer)]
    for key in ("step", "true_positives", "false_positives", "true_negatives", "false_negatives"):
        assert [e[key] for e in pr[0]] == [e[key] for e in pr[1]], key
    for key in ("precision", "recall"):
        np.testing.assert_allclose([e[key] for e in pr[0]], [e[key] for e in pr[1]], rtol=1e-6)
    layout = tb.json("/data/plugin/custom_scalars/layout")  # merged over runs: one category, all agree
    assert layout["category"] == [
        {"title": "c", "chart": [{"title": "both", "multiline": {"tag": ["loss", "lr"]}}], "closed": False}
    ]


@pytest.mark.parametrize("peer", BOTH)
def test_same_mesh_data(tb, peer):
    for kind, dtype in (("VERTEX", "<f4"), ("FACE", "<i4")):
        got = [
            tb.get("/data/plugin/mesh/data", run=w, tag="mesh", sample=0, step=5, content_type=kind)
            for w in ("tbwriter", peer)
        ]
        np.testing.assert_array_equal(np.frombuffer(got[0], dtype), np.frombuffer(got[1], dtype))


@pytest.mark.parametrize("peer", BOTH)
def test_same_projector_embedding(tb, peer):
    infos = [tb.json("/data/plugin/projector/info", run=w)["embeddings"] for w in ("tbwriter", peer)]
    assert [e["tensorName"] for e in infos[0]] == [e["tensorName"] for e in infos[1]] == ["words:00006"]
    assert infos[0][0]["sprite"]["singleImageDim"] == infos[1][0]["sprite"]["singleImageDim"] == [5, 5]
    for route, decode in (
        ("tensor", lambda b: np.frombuffer(b, "<f4")),
        ("metadata", bytes.decode),
        ("sprite_image", lambda b: np.asarray(PIL.open(io.BytesIO(b)).convert("RGB"), np.int32)),
    ):
        ours, theirs = (
            decode(tb.get(f"/data/plugin/projector/{route}", run=w, name="words:00006")) for w in ("tbwriter", peer)
        )
        if route == "sprite_image":
            assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1, route
        else:
            np.testing.assert_array_equal(ours, theirs)


def graph_nodes(tb, run) -> set:
    from google.protobuf import text_format

    from tbwriter.proto import graph_pb2

    g = text_format.Parse(
        tb.get("/data/plugin/graphs/graph", run=run, conceptual="false").decode(), graph_pb2.GraphDef()
    )
    return {(n.name, n.op, tuple(n.input)) for n in g.node}


@pytest.mark.parametrize("peer", BOTH)
def test_same_graph_nodes(tb, peer):
    ours = graph_nodes(tb, "tbwriter")
    assert ours == graph_nodes(tb, peer)
    assert {"Sequential/Linear[0]", "Sequential/Linear[2]"} <= {n.rsplit("/", 1)[0] for n, _, _ in ours}


@pytest.mark.parametrize("peer", BOTH)
def test_same_video_frames(tb, peer):
    if "video" in PEERS[peer][1]:
        pytest.skip(f"{peer}'s add_video needs the moviepy package, not installed (pip install -e '.[peers]')")
    gifs = []
    for w in ("tbwriter", peer):
        (meta,) = tb.json("/data/plugin/images/images", run=w, tag="clip", sample=0)
        gifs.append(
            (meta["step"], PIL.open(io.BytesIO(tb.get("/data/plugin/images/individualImage?" + meta["query"]))))
        )
    (step, ours), (step_theirs, theirs) = gifs
    assert step == step_theirs and ours.size == theirs.size and ours.n_frames == theirs.n_frames
    for k in range(ours.n_frames):  # palettes differ: compare the decoded frames loosely
        ours.seek(k)
        theirs.seek(k)
        diff = np.asarray(ours.convert("RGB"), np.int32) - np.asarray(theirs.convert("RGB"), np.int32)
        assert np.abs(diff).mean() < 24


@pytest.mark.parametrize("peer", BOTH)
def test_same_audio_samples(tb, peer):
    if "audio" in PEERS[peer][1]:
        pytest.skip(f"{peer}'s add_audio needs the soundfile package, not installed (pip install -e '.[peers]')")
    clips = []
    for w in ("tbwriter", peer):
        (meta,) = tb.json("/data/plugin/audio/audio", run=w, tag="sound", sample=0)
        with wave.open(io.BytesIO(tb.get("/data/plugin/audio/individualAudio?" + meta["query"]))) as f:
            clips.append((meta["step"], f.getframerate(), f.getnchannels(), f.readframes(f.getnframes())))
    (step, rate, channels, pcm), theirs = clips
    assert (step, rate, channels) == theirs[:3]
    # torch and tbwriter scale by 32767 (truncating, rounding); tensorboardX's soundfile by 32768:
    # samples agree within 2 of 32767 (0.006% of full scale).
    np.testing.assert_allclose(np.frombuffer(pcm, "<i2"), np.frombuffer(theirs[3], "<i2"), atol=2)


@pytest.mark.parametrize("peer", BOTH)
def test_same_hparams_session(tb, peer):
    groups = tb.session_groups(1 + len(PEERS))
    by_writer = {}
    for g in groups:
        (session,) = g["sessions"]
        by_writer[session["name"].split("/")[0]] = (
            g["hparams"],
            [(m["name"]["tag"], m["value"]) for m in session["metricValues"]],
        )
    assert by_writer["tbwriter"] == by_writer[peer]
    assert by_writer["tbwriter"][0] == {"lr": 0.1, "layers": 2, "opt": "sgd"}


# --- the API itself ----------------------------------------------------------------------------


def public_methods(cls) -> dict:
    return {
        n: inspect.signature(f)
        for n, f in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_") or n == "__init__"
    }


# Where the two peers' positional orders disagree, tbwriter follows torch and documents it
# (docs/compatibility.md); the other peer's order is still accepted where the types tell them apart.
POSITIONAL_EXCEPTIONS = {
    ("tensorboardX", "add_hparams"),
    ("tensorboardX", "add_image_with_boxes"),
    ("tensorboardX", "add_scalar"),
    ("tensorboardX", "__init__"),
}


@pytest.mark.parametrize("peer", BOTH)
def test_every_public_method_of_the_peer_with_its_parameters_and_defaults(peer):
    ours = public_methods(tbwriter.SummaryWriter)
    for name, theirs in public_methods(PEERS[peer][0]).items():
        assert name in ours, f"{peer}.SummaryWriter.{name} is missing"
        mine = ours[name].parameters
        for p in theirs.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                continue
            assert p.name in mine, f"{name}: parameter {p.name} of {peer} is missing"
            if p.default is not p.empty:
                assert mine[p.name].default == p.default, f"{name}({p.name}=...): default differs"
        positional = [p.name for p in theirs.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        if (peer, name) not in POSITIONAL_EXCEPTIONS and (peer, name) != ("torch", "add_onnx_graph"):
            assert list(mine)[: len(positional)] == positional, f"{name}: positional order differs from {peer}"
