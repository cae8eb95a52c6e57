"""The text of :meth:`cnnkit.Sequential.summary`: a table of the layers."""

__all__ = ["summary_text", "format_bytes"]


def format_bytes(n):
    """``n`` bytes in B, KB, MB or GB (1024-based), two decimals."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0
    return f"{n:.2f} GB"  # pragma: no cover


def summary_text(model):
    """The layer table of a built model: each layer's name and type, its
    per-sample output shape and parameter count, then the totals."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        rows.append((f"{kind.lower()}_{i} ({kind})",
                     str((None,) + tuple(layer.output_shape)),
                     f"{layer.count_params:,}"))
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    w2 = max(len(r[2]) for r in rows)
    width = w0 + w1 + w2
    total = model.count_params()
    size = format_bytes(total * model.dtype.itemsize)
    lines = [f'Model: "{type(model).__name__}" (input '
             f'{(None,) + model.input_shape}, {model.dtype.name})',
             "=" * width]
    for j, r in enumerate(rows):
        lines.append(f"{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:>{w2}}")
        if j == 0:
            lines.append("=" * width)
    lines += ["=" * width,
              f"Total params: {total:,} ({size})",
              f"Trainable params: {total:,} ({size})",
              "Non-trainable params: 0 (0 B)", "=" * width]
    return "\n".join(lines)
