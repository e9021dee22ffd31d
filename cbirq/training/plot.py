"""The accuracy-trend PNG of a training report, drawn with Pillow (no plotting library)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = (900, 540)
MARGIN = (80, 40, 30, 70)  # left, top, right, bottom
COLORS = {"train_acc": (31, 119, 180), "test_acc": (214, 39, 40)}
LABELS = {"train_acc": "train accuracy", "test_acc": "test accuracy"}


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def accuracy_plot(history: list[dict], out: Path, title: str, mark_lr: bool = True) -> None:
    """Train and test accuracy per epoch; with `mark_lr`, a dashed line where a step schedule
    changed the learning rate (one-cycle schedules change it every step: nothing to mark)."""
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom
    epochs = [row["epoch"] for row in history]
    first, last = min(epochs), max(max(epochs), min(epochs) + 1)
    values = [row[k] for row in history for k in COLORS]
    low = max(0.0, min(values) - 0.05)
    low = int(low * 10) / 10  # a round floor keeps the ticks readable

    def point(epoch: float, acc: float) -> tuple[float, float]:
        x = left + (epoch - first) / (last - first) * width
        y = top + (1 - (acc - low) / (1 - low)) * height
        return x, y

    draw.rectangle([left, top, left + width, top + height], outline="black")
    for tick in range(int(low * 10), 11):
        acc = tick / 10
        _, y = point(first, acc)
        draw.line([left, y, left + width, y], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{acc:.0%}", fill="black", anchor="rm", font=_font(14))
    for epoch in range(first, last + 1):
        x, _ = point(epoch, low)
        draw.text((x, top + height + 8), str(epoch), fill="black", anchor="mt", font=_font(14))
    draw.text((left + width / 2, SIZE[1] - 22), "epoch", fill="black", anchor="mm", font=_font(16))
    draw.text((SIZE[0] / 2, 18), title, fill="black", anchor="mm", font=_font(18))

    for prev, row in zip(history, history[1:]):
        if mark_lr and row["lr"] != prev["lr"]:
            x, _ = point(prev["epoch"] + 0.5, low)
            for y in range(top, top + height, 12):
                draw.line([x, y, x, y + 6], fill=(120, 120, 120), width=2)
            draw.text(
                (x + 4, top + 6),
                f"lr {prev['lr']:g} -> {row['lr']:g}",
                fill=(90, 90, 90),
                font=_font(14),
            )

    for i, (key, color) in enumerate(COLORS.items()):
        points = [point(row["epoch"], row[key]) for row in history]
        if len(points) > 1:
            draw.line(points, fill=color, width=3)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
        ly = top + height - 50 + i * 22
        draw.line([left + width - 190, ly, left + width - 160, ly], fill=color, width=3)
        draw.text((left + width - 150, ly), LABELS[key], fill="black", anchor="lm", font=_font(15))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
