"""Sphinx extension: the results of ``benchmarks/run.py --json`` as a chart
and tables.

Directives, each taking the results file (relative to the page, or to the
documentation root with a leading ``/``)::

    .. bench-chart:: /_static/bench/results.json

    .. bench-table:: /_static/bench/results.json
       :group: lenet

``bench-chart`` renders, at build time and with matplotlib's Agg backend,
a horizontal bar chart of the speed-ups of cnnkit (the other framework's
median time divided by cnnkit's; log scale, a line at 1x) to a PNG in the
build output, and inserts it as a figure whose caption names the machine,
thread count and date of the run.  ``bench-table`` inserts the numbers:
one table per group of workloads (or only ``:group:``), with the median
times, the ratios and cnnkit's rate, and the memory line of the LeNet-5
group.  The file is checked against its schema
(:func:`cnnkit.bench.validate`); a page that uses it is rebuilt when it
changes.
"""
import json
import os

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from cnnkit import bench

COLORS = {"torch": "#d1603d", "numpy": "#3b75af"}


def load(path):
    """The validated results document stored at ``path``."""
    with open(path) as f:
        return bench.validate(json.load(f))


def _label(rec):
    return f"{rec['name']}  {rec['shape']}"


def render(results, png_path):
    """Draw the speed-up chart of ``results`` (a results document or the
    path of one) into the PNG file ``png_path``; return ``png_path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    doc = load(results) if isinstance(results, (str, os.PathLike)) \
        else bench.validate(results)
    recs = doc["workloads"]
    others = [fw for fw in ("torch", "numpy")
              if any(r["ratios"][fw] is not None for r in recs)]
    fig = Figure(figsize=(9, 1.4 + 0.34 * max(len(recs), 1)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / max(len(others), 1)
    values = []
    for j, fw in enumerate(others):
        ys, xs = [], []
        for i, rec in enumerate(recs):
            r = rec["ratios"][fw]
            if r is not None:
                ys.append(i - 0.4 + height * (j + 0.5))
                xs.append(r)
        values += xs
        bars = ax.barh(ys, xs, height=height * 0.9, color=COLORS[fw],
                       label=f"vs {bench.NAMES[fw]}")
        ax.bar_label(bars, labels=[f"{x:.2f}x" for x in xs], padding=3,
                     fontsize=7)
    ax.set_xscale("log")
    lo = min(values + [1.0]) / 2
    hi = max(values + [1.0]) * 3
    ax.set_xlim(lo, hi)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(recs)))
    ax.set_yticklabels([_label(r) for r in recs], fontsize=7.5)
    ax.set_ylim(len(recs) - 0.5, -0.5)
    for i in range(1, len(recs)):
        if recs[i]["group"] != recs[i - 1]["group"]:
            ax.axhline(i - 0.5, color="0.75", linewidth=0.8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("other framework's median time / cnnkit's (above 1x: "
                  "cnnkit is faster)")
    ax.grid(axis="x", which="major", color="0.9")
    ax.set_axisbelow(True)
    if others:
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=2,
                  frameon=False, fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path)
    return png_path


def caption(doc):
    """What ran where and when, in one sentence."""
    m, v = doc["machine"], doc["versions"]
    names = [f"cnnkit {v['cnnkit']}", f"NumPy {v['numpy']}"]
    if v["torch"]:
        names.append(f"PyTorch {v['torch']}")
    text = (f"{m['cpu']} ({m['cores']} cores, {m['arch']}), "
            f"{doc['threads']} thread(s) per framework, SIMD path "
            f"{doc['simd_path']}; {', '.join(names)}; medians of "
            f"{doc['settings']['repeats']} interleaved repeats, "
            f"{doc['date'][:10]}.")
    if doc.get("unreliable"):
        text += (" The run found its timings unreliable: "
                 + "; ".join(doc["unreliable"]) + ".")
    return text


def _table(title, header, rows):
    table = nodes.table(classes=["bench-table"])
    table += nodes.title(text=title)
    group = nodes.tgroup(cols=len(header))
    table += group
    for i in range(len(header)):
        group += nodes.colspec(colwidth=(16, 28)[i] if i < 2 else 13)

    def row(cells):
        r = nodes.row()
        for c in cells:
            r += nodes.entry("", nodes.paragraph(text=c))
        return r

    group += nodes.thead("", row(header))
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += body
    return table


TITLES = {"kernels": "Kernels (LeNet-5 sizes)",
          "conv64": "A 64 -> 64 channel 3x3 convolution",
          "gemm": "Square matrix products C = A @ B^T",
          "lenet": "LeNet-5 training (one pass) and inference",
          "zoo": "ResNet-20 training (one pass) and inference, 1x28x28",
          "grid": "The layer grid: convolutions and dense layers, batch "
                  "1 to 128"}


def tables(doc, group=None):
    """Docutils nodes: a table per group of workloads, and the memory line
    under the LeNet-5 one."""
    shown = bench.shown_frameworks(doc)
    header = ["workload", "shape"]
    header += [f"{bench.NAMES[fw]} time" for fw in shown]
    header += [f"{bench.NAMES[fw]} / cnnkit" for fw in shown[1:]]
    header += ["cnnkit rate"]
    out = []
    for g in bench.GROUPS:
        recs = [r for r in doc["workloads"] if r["group"] == g]
        if not recs or group not in (None, g):
            continue
        rows = []
        for r in recs:
            cells = [r["name"], r["shape"]]
            cells += [bench.format_time(r["median_s"][fw]) for fw in shown]
            cells += [bench.format_ratio(r["ratios"][fw])
                      for fw in shown[1:]]
            rows.append(cells + [bench.format_rate(r) or "-"])
        out.append(_table(TITLES[g], header, rows))
        if g == "lenet" and doc["memory"]:
            text = bench.memory_text(doc["memory"])
            out.append(nodes.paragraph(text=text[0].upper() + text[1:] + "."))
    return out


class _ResultsDirective(SphinxDirective):
    required_arguments = 1

    def results(self):
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(rel)
        return path, load(path)


class BenchChart(_ResultsDirective):
    """``.. bench-chart:: results.json``: the speed-up chart, as a
    figure."""
    option_spec = {"width": directives.length_or_percentage_or_unitless}

    def run(self):
        path, doc = self.results()
        stem = os.path.splitext(os.path.basename(path))[0]
        png = os.path.join(self.env.app.outdir, "_bench",
                           f"{stem}-speedup.png")
        render(doc, png)
        # an image path relative to the source root, which the builder
        # copies into the output's images
        uri = "/" + os.path.relpath(png, self.env.srcdir).replace(os.sep, "/")
        image = nodes.image(uri=uri, alt="speed-up of cnnkit over PyTorch "
                                         "and NumPy for each workload")
        if "width" in self.options:
            image["width"] = self.options["width"]
        text = ("Speed-up of cnnkit: the other framework's median time "
                "divided by cnnkit's (right of the 1x line, cnnkit is "
                "faster). " + caption(doc))
        return [nodes.figure("", image, nodes.caption(text=text))]


class BenchTable(_ResultsDirective):
    """``.. bench-table:: results.json``: the numbers, a table per group
    (``:group:`` for one of them)."""
    option_spec = {"group": lambda arg: directives.choice(arg, bench.GROUPS)}

    def run(self):
        _, doc = self.results()
        return tables(doc, self.options.get("group"))


def setup(app):
    app.add_directive("bench-chart", BenchChart)
    app.add_directive("bench-table", BenchTable)
    return {"version": "1", "parallel_read_safe": True,
            "parallel_write_safe": True}
