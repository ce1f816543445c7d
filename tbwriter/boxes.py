"""Bounding boxes (and their labels) drawn into an image with Pillow, as the peers draw them."""

import numpy as np

from tbwriter._convert import as_array


def draw_boxes(hwc: np.ndarray, box_tensor, labels=None, rescale=1) -> np.ndarray:
    """Return an RGB uint8 copy of hwc with red (xmin, ymin, xmax, ymax) boxes, labelled, then scaled by rescale."""
    boxes = as_array(box_tensor, "box_tensor", allow_empty=True)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"box_tensor: expected shape (N, 4) of xmin, ymin, xmax, ymax, got {boxes.shape}")
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None and len(labels) != len(boxes):
        labels = None  # the peers drop labels that do not match the boxes one to one
    if not rescale > 0:
        raise ValueError(f"rescale: expected a positive factor, got {rescale!r}")
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImportError("add_image_with_boxes needs Pillow: pip install 'npnn-tbwriter[media]'") from None
    img = Image.fromarray(
        np.ascontiguousarray(np.broadcast_to(hwc, hwc.shape[:2] + (3,)) if hwc.shape[2] == 1 else hwc[:, :, :3]), "RGB"
    )
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (left, top, right, bottom) in enumerate(boxes.tolist()):
        draw.line([(left, top), (left, bottom), (right, bottom), (right, top), (left, top)], width=2, fill="red")
        if labels is not None and labels[i]:
            text = str(labels[i])
            x0, y0, x1, y1 = font.getbbox(text)
            margin = np.ceil(0.05 * (y1 - y0))
            draw.rectangle([(left, bottom - (y1 - y0) - 2 * margin), (left + x1 - x0, bottom)], fill="red")
            draw.text((left + margin, bottom - (y1 - y0) - margin), text, fill="black", font=font)
    if rescale != 1:
        img = img.resize((int(img.width * rescale), int(img.height * rescale)), Image.LANCZOS)
    return np.asarray(img)
