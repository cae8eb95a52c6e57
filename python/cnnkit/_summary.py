"""The text of :meth:`cnnkit.Sequential.summary`: a table of the layers."""

__all__ = ["summary_text", "format_bytes"]


def format_bytes(n):
    """``n`` bytes in B, KB, MB or GB (1024-based), two decimals."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0
    return f"{n:.2f} GB"  # pragma: no cover


def summary_text(model, rows, header=("Layer (type)", "Output Shape",
                                         "Param #")):
    """The summary of a built model: a table with one row per layer call
    (the cells given as strings, aligned under ``header``; the last column
    of counts right-aligned when it is ``"Param #"``), then the totals."""
    rows = [tuple(header)] + [tuple(r) for r in rows]
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    count_col = header.index("Param #")

    def line(r):
        cells = []
        for k, cell in enumerate(r):
            last = k == len(r) - 1
            if k == count_col:
                cells.append(f"{cell:>{widths[k]}}" + ("" if last else "  "))
            else:
                cells.append(cell if last else f"{cell:<{widths[k] + 2}}")
        return "".join(cells).rstrip()

    width = sum(widths) + 2 * (len(header) - 1)
    trainable = model.count_params()
    frozen = model.count_buffers() if hasattr(model, "count_buffers") else 0
    total = trainable + frozen
    size = format_bytes(total * model.dtype.itemsize)
    tsize = format_bytes(trainable * model.dtype.itemsize)
    fsize = format_bytes(frozen * model.dtype.itemsize)
    lines = [f'Model: "{type(model).__name__}" (input '
             f'{(None,) + model.input_shape}, {model.dtype.name})',
             "=" * width]
    for j, r in enumerate(rows):
        lines.append(line(r))
        if j == 0:
            lines.append("=" * width)
    lines += ["=" * width,
              f"Total params: {total:,} ({size})",
              f"Trainable params: {trainable:,} ({tsize})",
              f"Non-trainable params: {frozen:,} ({fsize})", "=" * width]
    return "\n".join(lines)
